"""Fixtures for the CLI tests: a fresh data directory and a runner bound to it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .helpers import Headwater, run_headwater


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory that does not exist yet."""
    return tmp_path / "data"


@pytest.fixture
def hw(data: Path) -> Headwater:
    """``hw(*args, input=...)`` runs headwater on the test's data directory."""

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_headwater(data, *args, input=input)

    return run
