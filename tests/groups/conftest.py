"""Fixtures of the coordinator, consumer and end-to-end tests: a fresh store."""

from __future__ import annotations

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
    """An open store whose topics (``__consumer_offsets`` too) default to durability never."""
    async with open_store(data, default_config=NEVER) as opened:
        yield opened
