"""Brute-force protection for credential checks, on the kernel's ``RateLimiter``.

Password checks (every login surface: native token, RealWorld, cookie session; and the
password confirmations of account changes) count *failures* in four moving windows.
Moving windows decay hit by hit: nothing stays locked until an admin steps in.

* per account and client address (default 5 / 15 min): the lock an attacker earns is
  theirs alone; the owner, signing in from elsewhere, is not affected. Cleared by a
  success from that address.
* per client address (30 / 15 min), across accounts: stops one address spraying a common
  password over many accounts. Cleared by a success from that address, so the ordinary
  typos of many people behind one NAT do not add up to a lockout.
* per client address per day (500): never cleared, so an attacker who owns an account
  cannot wipe the previous window at will by signing in to it between guesses.
* per account (50 / hour), whatever the address: slows a distributed guess against one
  account. Addresses the account signed in from within ``known_address_ttl`` are exempt,
  so such an attack cannot keep the owner out of their usual places; for new places it
  decays by itself once the attack stops.

A check goes ``check_login`` (refuse at once, without hashing, when a window is full),
then the password, then ``login_failed`` or ``login_succeeded``. Counting failures, not
attempts, lets one account sign in from many tabs or workers at once. A burst of parallel
guesses all pass the first check; so the outcome is re-checked after the password: a
failure that no longer fits its window answers 429, and so does a *correct* password
once concurrent failures filled a window. An attacker learns the result of at most the
window's number of guesses, however many they send at once.

Accounts are keyed by the SHA-256 of the normalized identifier the client typed, so an
unknown email is limited exactly like a known one (the limit reveals nothing) and no
address book ends up in Redis. Client addresses are IPv4 addresses or IPv6 /64 networks.

Requests for mailed links and attempts to redeem tokens are plain request limits.

Like every limit of the platform, an unreachable Redis fails open (logged; ``/readyz``
reports it): an outage of the limiter must not lock every user out.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Any, TypeVar

import structlog
from fastapi import Request
from limits.errors import StorageError

from engineroom.core.errors import RateLimited
from engineroom.core.platform import Platform
from engineroom.core.ratelimit import RateLimitResult
from engineroom.identity.config import IdentitySettings, identity_settings

_SCOPE = "identity-login"
_CODE_SCOPE = "identity-code"
_MAIL_SCOPE = "identity-mail"
_TOKEN_SCOPE = "identity-token"
_KNOWN_KEY = "identity:known-address:"
_IPV6_PREFIX = 64
LOGIN_REFUSED = "Too many sign-in attempts; retry after the delay in Retry-After."
CODE_REFUSED = "Too many code attempts; retry after the delay in Retry-After."

logger = structlog.get_logger("engineroom.identity.throttle")


def client_address(request: Request) -> str:
    """The client's address as limits see it: IPv4, or the IPv6 /64 it belongs to."""
    host = request.client.host if request.client else ""
    return address_key(host)


def address_key(host: str) -> str:
    try:
        address = ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ip_network(f"{address}/{_IPV6_PREFIX}", strict=False))
    return str(address)


def account_key(identifier: str) -> str:
    """A stable key for what the client typed (email or username), whatever its case."""
    normalized = identifier.strip().lower()
    return hashlib.sha256(normalized.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Window:
    limit: str
    keys: tuple[str, ...]


def _refusal(results: Sequence[RateLimitResult], message: str) -> RateLimited:
    worst = max(results, key=lambda result: result.reset_after)
    headers = worst.headers()
    headers["Retry-After"] = str(worst.retry_after)
    return RateLimited(message, headers=headers)


T = TypeVar("T")


async def _run_all(
    platform: Platform, calls: Sequence[Coroutine[Any, Any, T]]
) -> list[T | BaseException]:
    """Run the calls, each outcome a result or the exception it raised.

    With Redis they run at once (one round trip of latency for all). Without it, the
    limiter and the cache live in this process and never wait: running them one after
    the other saves a task each, which costs more than the call itself.
    """
    if platform.settings.redis_url is not None:
        return await asyncio.gather(*calls, return_exceptions=True)
    outcomes: list[T | BaseException] = []
    for index, call in enumerate(calls):
        try:
            outcomes.append(await call)
        except Exception as exc:
            outcomes.append(exc)
        except BaseException:
            for waiting in calls[index + 1 :]:
                waiting.close()
            raise
    return outcomes


async def _gather(
    platform: Platform, scope: str, calls: Sequence[Coroutine[Any, Any, RateLimitResult]]
) -> list[RateLimitResult] | None:
    """Run the limiter calls (see ``_run_all``); ``None`` when the storage is unreachable
    (limits fail open)."""
    results = await _run_all(platform, calls)
    found: list[RateLimitResult] = []
    for result in results:
        if isinstance(result, StorageError):
            logger.error("throttle_unavailable", scope=scope, error=str(result))
            return None
        if isinstance(result, BaseException):
            raise result
        found.append(result)
    return found


def _raise_if_refused(results: Sequence[RateLimitResult] | None, message: str) -> None:
    refused = [result for result in results or () if not result.allowed]
    if refused:
        raise _refusal(refused, message)


async def _hit_all(
    platform: Platform, scope: str, windows: Sequence[_Window], message: str
) -> None:
    """Count one hit in every window; ``RateLimited`` if one of them was already full."""
    limiter = platform.rate_limiter
    calls = [limiter.hit(window.limit, scope, *window.keys) for window in windows]
    _raise_if_refused(await _gather(platform, scope, calls), message)


async def _peek_all(
    platform: Platform, scope: str, windows: Sequence[_Window], message: str
) -> None:
    """``RateLimited`` if one of the windows is full; counts nothing."""
    limiter = platform.rate_limiter
    calls = [limiter.peek(window.limit, scope, *window.keys) for window in windows]
    _raise_if_refused(await _gather(platform, scope, calls), message)


async def _reset_all(platform: Platform, scope: str, windows: Sequence[_Window]) -> None:
    results = await _run_all(
        platform,
        [platform.rate_limiter.reset(window.limit, scope, *window.keys) for window in windows],
    )
    for result in results:
        if isinstance(result, StorageError):
            logger.error("throttle_unavailable", scope=scope, error=str(result))
        elif isinstance(result, BaseException):
            raise result


@dataclass(frozen=True)
class LoginKey:
    """Who is trying (the typed identifier, hashed) from where."""

    account: str
    address: str

    @classmethod
    def of(cls, identifier: str, address: str) -> LoginKey:
        return cls(account=account_key(identifier), address=address)


def _cleared_by_success(config: IdentitySettings, key: LoginKey) -> list[_Window]:
    return [
        _Window(config.login_limit_per_account_address, ("acct-addr", key.account, key.address)),
        _Window(config.login_limit_per_address, ("addr", key.address)),
    ]


def _login_windows(config: IdentitySettings, key: LoginKey, *, known: bool) -> list[_Window]:
    windows = _cleared_by_success(config, key)
    windows.append(_Window(config.login_limit_per_address_daily, ("addr-day", key.address)))
    if not known:
        windows.append(_Window(config.login_limit_per_account, ("acct", key.account)))
    return windows


def _known_key(key: LoginKey) -> str:
    return f"{_KNOWN_KEY}{key.account}:{key.address}"


async def _is_known(platform: Platform, key: LoginKey) -> bool:
    try:
        value = await platform.cache.get(_known_key(key))
    except Exception as exc:  # the cache is best effort: any failure reads as "not known"
        logger.warning("known_address_lookup_failed", error=str(exc))
        return False
    return value is not None


async def _peek_login(
    platform: Platform, key: LoginKey, message: str, *, known: bool | None = None
) -> bool:
    """Whether the address is known for the account (looked up unless given);
    ``RateLimited`` if a window that applies is full. With Redis, the known-address
    lookup and the peeks run at once."""
    config = identity_settings(platform.settings)
    windows = _login_windows(config, key, known=False)
    limiter = platform.rate_limiter
    peeks = _gather(platform, _SCOPE, [limiter.peek(w.limit, _SCOPE, *w.keys) for w in windows])
    if known is not None:
        is_known, results = known, await peeks
    elif platform.settings.redis_url is not None:
        is_known, results = await asyncio.gather(_is_known(platform, key), peeks)
    else:
        is_known = await _is_known(platform, key)
        results = await peeks
    if results is not None and is_known:
        # The per-account window (the last one) does not apply to a known address.
        results = results[:-1]
    _raise_if_refused(results, message)
    return is_known


async def check_login(platform: Platform, *, identifier: str, address: str) -> bool:
    """Before a password check: ``RateLimited`` (and no check) when a window is full.

    Returns whether the address is one the account signed in from (``known`` of
    ``login_succeeded``).
    """
    return await _peek_login(platform, LoginKey.of(identifier, address), LOGIN_REFUSED)


async def login_failed(platform: Platform, *, identifier: str, address: str) -> None:
    """Count a wrong password; ``RateLimited`` when it did not fit its window any more
    (answer that instead of "wrong password": the guess was one too many)."""
    key = LoginKey.of(identifier, address)
    known = await _is_known(platform, key)
    windows = _login_windows(identity_settings(platform.settings), key, known=known)
    await _hit_all(platform, _SCOPE, windows, LOGIN_REFUSED)


async def login_succeeded(
    platform: Platform, *, identifier: str, address: str, known: bool | None = None
) -> None:
    """After a right password: ``RateLimited`` if concurrent failures filled a window
    meanwhile (the success must not be revealed); otherwise clear this address's windows
    and remember it as a place the account signs in from.

    ``known``: what ``check_login`` answered for this attempt, so that the known-address
    lookup is not made twice (an address it did not know is held to the stricter
    windows, whatever a concurrent sign-in stored meanwhile).
    """
    key = LoginKey.of(identifier, address)
    config = identity_settings(platform.settings)
    await _peek_login(platform, key, LOGIN_REFUSED, known=known)
    reset = _reset_all(platform, _SCOPE, _cleared_by_success(config, key))
    if platform.settings.redis_url is not None:
        await asyncio.gather(reset, _remember(platform, key, config))
    else:
        await reset
        await _remember(platform, key, config)


async def _remember(platform: Platform, key: LoginKey, config: IdentitySettings) -> None:
    try:
        await platform.cache.set(_known_key(key), True, expire=config.known_address_ttl)
    except Exception as exc:  # best effort, see _is_known
        logger.warning("known_address_store_failed", error=str(exc))


async def forget_account_failures(platform: Platform, *, identifier: str) -> None:
    """Clear the per-account window (after the owner proved control by a password reset)."""
    config = identity_settings(platform.settings)
    window = _Window(config.login_limit_per_account, ("acct", account_key(identifier)))
    await _reset_all(platform, _SCOPE, [window])


def _code_window(platform: Platform, address: str) -> _Window:
    return _Window(identity_settings(platform.settings).code_limit_per_address, ("addr", address))


async def check_code_attempt(platform: Platform, *, address: str) -> None:
    """Before a second-factor code is checked: ``RateLimited`` when the window is full."""
    await _peek_all(platform, _CODE_SCOPE, [_code_window(platform, address)], CODE_REFUSED)


async def code_failed(platform: Platform, *, address: str) -> None:
    await _hit_all(platform, _CODE_SCOPE, [_code_window(platform, address)], CODE_REFUSED)


async def code_succeeded(platform: Platform, *, address: str) -> None:
    window = _code_window(platform, address)
    await _peek_all(platform, _CODE_SCOPE, [window], CODE_REFUSED)
    await _reset_all(platform, _CODE_SCOPE, [window])


async def check_mail_request(
    platform: Platform, *, kind: str, recipient: str, address: str
) -> None:
    """Count a request for a mailed link (``kind``: reset, verify, change) to
    ``recipient`` (an email or a user id) from ``address``; ``RateLimited`` past a limit.

    The recipient limit counts unknown emails like known ones: its answer reveals nothing.
    """
    config = identity_settings(platform.settings)
    windows = [
        _Window(config.mail_limit_per_address, ("addr", address)),
        _Window(config.mail_limit_per_recipient, (kind, account_key(recipient))),
    ]
    await _hit_all(
        platform,
        _MAIL_SCOPE,
        windows,
        "Too many mails requested; retry after the delay in Retry-After.",
    )


async def check_token_attempt(platform: Platform, *, address: str) -> None:
    """Count an attempt to redeem a mailed token from ``address``."""
    config = identity_settings(platform.settings)
    await _hit_all(
        platform,
        _TOKEN_SCOPE,
        [_Window(config.token_limit_per_address, ("addr", address))],
        "Too many attempts; retry after the delay in Retry-After.",
    )
