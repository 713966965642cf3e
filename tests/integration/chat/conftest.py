"""Every chat test lets its clients finish closing (see ``tests.support.chat.settle``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.chat import settle


@pytest.fixture(autouse=True)
async def _settle_clients() -> AsyncIterator[None]:
    yield
    await settle()
