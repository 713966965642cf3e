"""Request ids: accept a safe ``X-Request-ID`` from the caller or make one.

The id is stored in the scope state (``request.state.request_id``), echoed in the
response, and bound to structlog's context so every log line of the request carries it
(see ``EdgeMiddleware``). The state dict is updated in place, so the app's outermost
error handler (which runs outside the middleware) still sees the id when it logs and
renders a 500.
"""

from __future__ import annotations

import random
import re

REQUEST_ID_HEADER = "X-Request-ID"
HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
# Ids end up in logs and headers: anything else (spaces, quotes, control characters,
# huge values) could forge log entries or split headers, so it is replaced.
_SAFE_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def new_request_id() -> str:
    """32 random hex digits.

    An id correlates log lines; it is no secret and grants nothing, so it comes from the
    process's pseudo-random generator (reseeded in forked children) rather than from
    ``os.urandom``, a system call per request.
    """
    return f"{random.getrandbits(128):032x}"


def safe_request_id(value: bytes | None) -> str | None:
    """The caller's id when it is safe to log and echo, else ``None``."""
    if value is None or _SAFE_ID.fullmatch(value) is None:
        return None
    return value.decode("ascii")
