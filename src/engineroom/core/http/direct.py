"""Direct routes: hot reads answered without FastAPI's routing and dependency machinery.

FastAPI finds a request's route by asking every route in turn (through each included
router, twice), then solves the route's dependencies in two exit stacks; on a cached read
that is most of the cost of the answer. An endpoint marked ``@direct`` takes only the
``Request`` (and ``str`` path parameters) and returns a ``Response``: the dispatcher that
``install_direct_routes`` puts in front of the app's router finds it in an index and calls
it itself. Every other request goes to FastAPI's router unchanged, and errors raised by a
direct endpoint reach the app's exception handlers as from any route.

The index decides as the router would: the first route, in registration order, whose path
and method match wins. A direct route is therefore served only when no route registered
before it matches the same request: for an exact path that is settled once, when the index
is built; for a template, the few earlier routes that could match a path of the same
prefix are tried on each request. A route that cannot be judged without running it (a
``Host`` route) keeps every route after it on FastAPI's path.

Direct routes stay registered with FastAPI, so OpenAPI documents them, and a request the
index does not claim (another method, a ``root_path``, FastAPI's own telemetry on) is
still served by FastAPI.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

ROUTE_TEMPLATE_KEY = "engineroom.route_template"
"""Scope key: the full path template of the direct route that served the request."""
_MARK = "__engineroom_direct__"
# Set by FastAPI when its native OpenTelemetry support is on: its router then records the
# matched route on the span, which only its own routing does.
_FASTAPI_TELEMETRY_KEY = "fastapi.telemetry"

DirectEndpoint = Callable[..., Awaitable[Response]]
E = TypeVar("E", bound=DirectEndpoint)


def direct(endpoint: E) -> E:
    """Mark a route endpoint to be served directly (see the module docstring).

    Place it under the route decorator. The endpoint takes a ``Request`` and, optionally,
    path parameters annotated ``str``; the route has no dependencies; it returns a
    ``Response``. ``install_direct_routes`` refuses a marked route that breaks a rule.
    """
    setattr(endpoint, _MARK, True)
    return endpoint


def is_direct(endpoint: object) -> bool:
    return getattr(endpoint, _MARK, False) is True


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the router matches a route on: its path and methods."""

    regex: re.Pattern[str]
    prefix: str
    """Literal start of every path the route matches."""
    exact: str | None
    """The route's only path, when it has no parameter."""
    methods: frozenset[str] | None
    """``None``: any method (mounts)."""

    def takes(self, method: str) -> bool:
        return self.methods is None or method in self.methods


@dataclass(frozen=True, slots=True)
class DirectRoute:
    endpoint: DirectEndpoint
    route: BaseRoute
    """What FastAPI puts in ``scope["route"]`` for this route."""
    template: str
    regex: re.Pattern[str]
    convertors: Mapping[str, Convertor[Any]]
    request_parameter: str
    path_parameters: tuple[str, ...]
    """The path parameters the endpoint declares (passed as keyword arguments)."""


@dataclass(frozen=True, slots=True)
class _Templated:
    route: DirectRoute
    shadowing_paths: frozenset[str]
    """Exact paths of earlier routes (same method) that this template also matches."""
    rivals: tuple[_Shape, ...]
    """Earlier templated routes (same method) whose paths may overlap this one's."""


def _shape(context: RouteContext) -> _Shape | None:
    """The route's shape, or ``None`` when it cannot be matched without running it."""
    if not isinstance(context.original_route, (Route, Mount)):
        return None
    regex = getattr(context, "path_regex", None)
    template = context.path_format
    if not isinstance(regex, re.Pattern) or not template:
        return None
    methods = getattr(context, "methods", None)
    return _Shape(
        regex=regex,
        prefix=template.split("{", 1)[0],
        exact=None if "{" in template else template,
        methods=frozenset(methods) if methods else None,
    )


def _direct_route(context: RouteContext, shape: _Shape) -> DirectRoute:
    """Check that a marked route can be served directly, and describe it."""
    endpoint = context.endpoint
    name = f"{context.name} ({context.path_format})"
    dependant = getattr(context, "dependant", None)
    if not isinstance(context.original_route, APIRoute) or endpoint is None:
        raise TypeError(f"{name}: only FastAPI routes can be direct")
    if dependant is not None and dependant.dependencies:
        raise TypeError(f"{name}: a direct route cannot have dependencies")
    hints = typing.get_type_hints(endpoint)
    request_parameter = None
    path_parameters = []
    for parameter in inspect.signature(endpoint).parameters.values():
        hint = hints.get(parameter.name)
        if isinstance(hint, type) and issubclass(hint, Request):
            request_parameter = parameter.name
        elif hint is str and parameter.name in shape.regex.groupindex:
            path_parameters.append(parameter.name)
        else:
            raise TypeError(
                f"{name}: a direct endpoint takes a Request and str path parameters, "
                f"not {parameter.name!r}"
            )
    if request_parameter is None:
        raise TypeError(f"{name}: a direct endpoint takes the Request")
    return DirectRoute(
        endpoint=endpoint,
        route=context.original_route,
        template=context.path_format or "",
        regex=shape.regex,
        convertors=getattr(context, "param_convertors", {}),
        request_parameter=request_parameter,
        path_parameters=tuple(path_parameters),
    )


def _may_overlap(first: str, second: str) -> bool:
    # Both match only paths that start with their literal prefix.
    return first.startswith(second) or second.startswith(first)


class RouteIndex:
    """Direct routes by method and path, built from the app's routes in matching order."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._exact: dict[tuple[str, str], DirectRoute] = {}
        self._templated: dict[str, list[_Templated]] = {}
        earlier: list[_Shape] = []
        undecidable = False
        for context in iter_route_contexts(routes):
            if isinstance(context.original_route, WebSocketRoute):
                continue  # never matches an HTTP request
            shape = _shape(context)
            if shape is None:
                undecidable = True
                continue
            if is_direct(context.endpoint):
                route = _direct_route(context, shape)
                if not undecidable:
                    self._add(route, shape, earlier)
            earlier.append(shape)

    def __len__(self) -> int:
        return len(self._exact) + sum(len(found) for found in self._templated.values())

    def _add(self, route: DirectRoute, shape: _Shape, earlier: list[_Shape]) -> None:
        for method in shape.methods or ():
            rivals = [other for other in earlier if other.takes(method)]
            if shape.exact is not None:
                if not any(other.regex.match(shape.exact) for other in rivals):
                    self._exact[(method, shape.exact)] = route
                continue
            self._templated.setdefault(method, []).append(
                _Templated(
                    route=route,
                    shadowing_paths=frozenset(
                        other.exact
                        for other in rivals
                        if other.exact is not None and shape.regex.match(other.exact)
                    ),
                    rivals=tuple(
                        other
                        for other in rivals
                        if other.exact is None and _may_overlap(other.prefix, shape.prefix)
                    ),
                )
            )

    def find(self, method: str, path: str) -> tuple[DirectRoute, dict[str, Any]] | None:
        """The direct route the router would choose for this request, with its path
        parameters; ``None`` when the router would choose another route (or none)."""
        found = self._exact.get((method, path))
        if found is not None:
            return found, {}
        for candidate in self._templated.get(method, ()):
            match = candidate.route.regex.match(path)
            if match is None:
                continue
            if path in candidate.shadowing_paths or any(
                rival.regex.match(path) for rival in candidate.rivals
            ):
                return None
            convertors = candidate.route.convertors
            return candidate.route, {
                key: convertors[key].convert(value) for key, value in match.groupdict().items()
            }
        return None


class DirectDispatcher:
    """Serves direct routes in front of the router, and hands everything else to it."""

    def __init__(self, app: FastAPI, fallback: ASGIApp) -> None:
        self.app = app
        self.fallback = fallback
        self._index = RouteIndex(app.routes)
        self._indexed_count = len(app.routes)

    @property
    def index(self) -> RouteIndex:
        # Routes added since the last look (tests add some after building the app).
        if len(self.app.routes) != self._indexed_count:
            self._index = RouteIndex(self.app.routes)
            self._indexed_count = len(self.app.routes)
        return self._index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = None
        if (
            scope["type"] == "http"
            and not scope.get("root_path")
            and _FASTAPI_TELEMETRY_KEY not in scope
        ):
            found = self.index.find(scope["method"], scope["path"])
        if found is None:
            await self.fallback(scope, receive, send)
            return
        route, path_params = found
        # What the router would have recorded for the route it chose.
        scope["path_params"] = path_params
        scope["endpoint"] = route.endpoint
        scope["route"] = route.route
        scope[ROUTE_TEMPLATE_KEY] = route.template
        scope.setdefault("router", self.app.router)
        arguments: dict[str, Any] = {name: path_params[name] for name in route.path_parameters}
        arguments[route.request_parameter] = Request(scope, receive, send)
        response = await route.endpoint(**arguments)
        await response(scope, receive, send)


def install_direct_routes(app: FastAPI) -> None:
    """Serve ``app``'s direct routes ahead of its router (inside the exception handlers)."""
    router = app.router
    router.middleware_stack = DirectDispatcher(app, router.middleware_stack)
