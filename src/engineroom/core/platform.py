"""The process-wide services every module uses, started and stopped together.

One ``Platform`` per process. In the embedded topology everything lives here (in-memory
cache and limits, in-process relay and job worker); in the scaled-out topology the same
objects talk to Redis, the broker and the server database, chosen by settings only.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from cashews import Cache

from engineroom.core.cache import create_cache
from engineroom.core.db import Database
from engineroom.core.events import OutboxRelay, Subscription
from engineroom.core.jobs import Jobs
from engineroom.core.mail import SEND_EMAIL_JOB, Mailer
from engineroom.core.module import Module
from engineroom.core.ratelimit import RateLimiter
from engineroom.settings import Settings

logger = structlog.get_logger("engineroom.platform")


class Platform:
    def __init__(
        self,
        settings: Settings,
        modules: Sequence[Module],
        *,
        peer_modules: Sequence[Module] = (),
    ) -> None:
        """``peer_modules``: modules other processes serve on the same database (a
        ``serve --modules`` subset). Events fanned out here also get delivery rows for
        their subscribers, so no event is lost to a module that runs elsewhere."""
        self.settings = settings
        self.modules = tuple(modules)
        self.database = Database(settings)
        self.subscriptions: tuple[Subscription, ...] = tuple(
            subscription for module in self.modules for subscription in module.subscriptions
        )
        local = {module.name for module in self.modules}
        peer_subscriptions = tuple(
            subscription
            for module in peer_modules
            if module.name not in local
            for subscription in module.subscriptions
        )
        self.relay = OutboxRelay(
            self.database, self.subscriptions, settings, peer_subscriptions=peer_subscriptions
        )
        self.database.add_after_commit_hook(self.relay.after_commit)
        self.cache: Cache = create_cache(settings)
        self.rate_limiter = RateLimiter(settings)
        self.mailer = Mailer(settings)
        self.jobs = Jobs(settings, self)
        self.jobs.register(SEND_EMAIL_JOB)
        for module in self.modules:
            for job in module.jobs:
                self.jobs.register(job)
        self._started = False

    async def start(self, *, run_relay: bool = True, run_jobs: bool = True) -> None:
        """Start background machinery, then each module's startup hooks."""
        if run_jobs:
            await self.jobs.start()
        if run_relay:
            await self.relay.start()
        for module in self.modules:
            for hook in module.on_startup:
                await hook(self)
        self._started = True
        logger.info("platform_started", modules=[m.name for m in self.modules])

    async def drain(self) -> None:
        """The server stopped accepting connections: let modules wind down the open ones."""
        for module in reversed(self.modules):
            for hook in module.on_drain:
                try:
                    await hook(self)
                except Exception:
                    logger.exception("module_drain_failed", module=module.name)

    async def stop(self) -> None:
        for module in reversed(self.modules):
            for hook in module.on_shutdown:
                try:
                    await hook(self)
                except Exception:
                    logger.exception("module_shutdown_failed", module=module.name)
        await self.relay.stop()
        await self.jobs.stop()
        await self.rate_limiter.close()
        await self.cache.close()
        await self.database.dispose()
        self._started = False
