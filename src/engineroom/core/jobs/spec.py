"""What a job is: its registration (``JobSpec``) and what it receives when it runs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engineroom.settings import Settings

if TYPE_CHECKING:
    from engineroom.core.platform import Platform

JobFunc = Callable[..., Awaitable[None]]
"""``async def job(ctx: JobContext, **kwargs) -> None`` with JSON-serialisable kwargs."""

DEFAULT_JOB_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class JobSpec:
    """A named background job.

    ``max_retries`` counts the runs after the first failure: a job with ``max_retries=3``
    runs at most four times. ``timeout`` bounds one run; a run that exceeds it fails (and
    is retried like any other failure).
    """

    name: str
    func: JobFunc
    max_retries: int = 3
    timeout: float = DEFAULT_JOB_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not self.name or any(ch.isspace() for ch in self.name):
            raise ValueError(f"job name must be non-empty without spaces, got {self.name!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")


@dataclass(frozen=True)
class JobContext:
    """Given to every run of a job as its first argument."""

    settings: Settings
    platform: Platform
    job_id: str
    """Stable across retries of the same enqueued job: use it as an idempotency key."""
    job_name: str
    attempt: int
    """1 for the first run, 2 for the first retry, and so on."""
    max_attempts: int

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


def check_job_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse kwargs that would not reach the job unchanged through a JSON broker.

    The in-process broker would happily pass any object, so this check keeps embedded and
    scaled-out behaviour identical: what works in tests works on RabbitMQ.
    """
    try:
        encoded = json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job {name!r}: arguments must be JSON-serialisable: {exc}") from None
    if json.loads(encoded) != kwargs:
        # Tuples become lists and non-string keys become strings on the way through.
        raise ValueError(
            f"job {name!r}: arguments must survive a JSON round trip unchanged "
            "(use lists, not tuples, and string dict keys)"
        )
