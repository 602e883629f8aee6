"""Fixtures of the connector tests: a data directory, and a store open on it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headwater.store import Store, open_store


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory that does not exist yet."""
    return tmp_path / "data"


@pytest.fixture
async def store(data: Path) -> AsyncIterator[Store]:
    """An open store (real files, real fsyncs), without background maintenance."""
    async with open_store(data, maintenance_interval_s=math.inf) as opened:
        yield opened
