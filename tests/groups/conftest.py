"""Fixtures of the coordinator, consumer and end-to-end tests: a fresh store."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headwater.store import Store, open_store

from .helpers import NEVER


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(data: Path) -> AsyncIterator[Store]:
    """An open store whose topics (``__consumer_offsets`` too) default to durability never.

    It runs no maintenance (retention, compaction): tests on virtual time would otherwise
    run it every 30 virtual seconds, and the clock jumps ahead whenever every task waits,
    which includes waiting for a worker thread (creating a topic).
    """
    async with open_store(data, default_config=NEVER, maintenance_interval_s=math.inf) as opened:
        yield opened
