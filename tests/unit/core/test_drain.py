"""``Module.on_drain``: run when the server stops accepting, before connections close."""

from __future__ import annotations

from engineroom.core.module import LifecycleHook, Module
from engineroom.core.platform import Platform
from engineroom.settings import Settings


async def test_drain_runs_every_module_hook_in_reverse_order_despite_failures(
    settings: Settings,
) -> None:
    calls: list[str] = []

    def hook(name: str, *, fail: bool = False) -> LifecycleHook:
        async def run(platform: Platform) -> None:
            calls.append(name)
            if fail:
                raise RuntimeError(name)

        return run

    modules = [
        Module(name="first", on_drain=(hook("first"),)),
        Module(name="second", on_drain=(hook("second", fail=True), hook("second-b"))),
    ]
    platform = Platform(settings, modules)
    try:
        await platform.drain()
    finally:
        await platform.stop()
    # A failing hook is logged and skipped: the other hooks still run.
    assert calls == ["second", "second-b", "first"]
