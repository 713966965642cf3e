"""The chat module. Layer 1 is the real-time transport (``chat.realtime``): a
Centrifugo-compatible WebSocket endpoint, history with recovery, presence, fan-out across
processes, and a server HTTP API. Layer 2 is the chat domain on top of it: rooms,
membership, messages, receipts and presence, stored in the relational database and
published live through the transport (see ``events.py``).
"""

from __future__ import annotations

from pathlib import Path

from engineroom.chat import activity_router, graphql, messages_router, rooms_router
from engineroom.chat import models as _models  # noqa: F401  (registers the tables)
from engineroom.chat.config import ChatSettings, chat_settings
from engineroom.chat.events import SUBSCRIPTIONS
from engineroom.chat.installers import INSTALLERS
from engineroom.chat.realtime import api, ws
from engineroom.chat.realtime.auth import IdentityTokens
from engineroom.chat.realtime.runtime import (
    ChatRuntime,
    VerifierFactory,
    find_runtime,
    register,
    unregister,
)
from engineroom.core.module import Module
from engineroom.core.platform import Platform

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def build_module(
    *,
    verifier: VerifierFactory | None = None,
    settings: ChatSettings | None = None,
) -> Module:
    """The chat module; tests and embedders may pass the token verifier and settings."""
    make_verifier: VerifierFactory = verifier or IdentityTokens

    async def start(platform: Platform) -> None:
        chat = settings or chat_settings(platform.settings)
        runtime = ChatRuntime(platform, chat, make_verifier(platform))
        for install in INSTALLERS:
            install(platform, runtime)
        await runtime.start()
        register(platform, runtime)

    async def drain(platform: Platform) -> None:
        runtime = find_runtime(platform)
        if runtime is not None:
            await runtime.drain()

    async def stop(platform: Platform) -> None:
        runtime = find_runtime(platform)
        unregister(platform)
        if runtime is not None:
            await runtime.stop()

    return Module(
        name="chat",
        routers=(
            ws.router,
            api.router,
            rooms_router.router,
            messages_router.router,
            activity_router.router,
        ),
        graphql_queries=graphql.QUERIES,
        graphql_mutations=graphql.MUTATIONS,
        subscriptions=SUBSCRIPTIONS,
        migrations=MIGRATIONS_DIR,
        on_startup=(start,),
        on_shutdown=(stop,),
        on_drain=(drain,),
        openapi_tag="chat",
        description="Real-time messaging: the WebSocket transport and its server API.",
    )


module = build_module()

__all__ = ["MIGRATIONS_DIR", "build_module", "module"]
