"""Where a second login step (MFA) plugs into password login.

When an account has ``mfa_enabled``, the password step does not issue tokens: it asks the
registered starter for a challenge and returns that; the second-factor route then checks
the code and issues the pair with ``refresh.issue_pair``. With MFA on and no starter
registered, login fails closed (503) rather than skipping the second factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from engineroom.core.errors import ServiceUnavailable
from engineroom.core.platform import Platform
from engineroom.identity.models import User


@dataclass(frozen=True)
class SecondFactorChallenge:
    challenge: str
    """Opaque value the client sends back with its code."""
    methods: tuple[str, ...]
    """E.g. ``("totp", "recovery_code")``."""
    expires_in: int
    """Seconds."""


class SecondFactorStarter(Protocol):
    """Makes the challenge; ``scopes`` is the narrowing the password step asked for."""

    async def __call__(
        self,
        session: AsyncSession,
        platform: Platform,
        user: User,
        *,
        scopes: Sequence[str] | None = None,
    ) -> SecondFactorChallenge: ...


_STARTERS: list[SecondFactorStarter] = []


def register_second_factor(starter: SecondFactorStarter) -> None:
    _STARTERS[:] = [starter]


async def start_second_factor(
    session: AsyncSession,
    platform: Platform,
    user: User,
    *,
    scopes: Sequence[str] | None = None,
) -> SecondFactorChallenge:
    """The challenge for ``user``; ``scopes`` must reach the tokens the code step issues."""
    if not _STARTERS:
        raise ServiceUnavailable("A second factor is required but none is available.")
    return await _STARTERS[0](session, platform, user, scopes=scopes)
