"""The chat module. Layer 1 is the real-time transport (``chat.realtime``): a
Centrifugo-compatible WebSocket endpoint, history with recovery, presence, fan-out across
processes, and a server HTTP API. The chat domain (rooms, messages) builds on it.
"""

from __future__ import annotations

from engineroom.chat.config import ChatSettings, chat_settings
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
        routers=(ws.router, api.router),
        on_startup=(start,),
        on_shutdown=(stop,),
        on_drain=(drain,),
        openapi_tag="chat",
        description="Real-time messaging: the WebSocket transport and its server API.",
    )


module = build_module()

__all__ = ["build_module", "module"]
