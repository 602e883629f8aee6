"""Helpers to run the real ``headwater`` command (the console script beside this interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HEADWATER = str(Path(sys.executable).with_name("headwater"))

Headwater = Callable[..., subprocess.CompletedProcess[str]]


def run_headwater(
    data: Path | None, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``headwater [--data DATA] ARGS...`` to completion and capture its output."""
    return subprocess.run(
        [HEADWATER, *(["--data", str(data)] if data is not None else []), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def assert_error(result: subprocess.CompletedProcess[str], *fragments: str, status: int = 1) -> str:
    """Check that a command failed with exactly one ``headwater: error:`` line; return it."""
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("headwater: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def env_without_data() -> dict[str, str]:
    """The environment with HEADWATER_DATA removed."""
    return {k: v for k, v in os.environ.items() if k != "HEADWATER_DATA"}


class Log:
    """Where a test's commands work: a data directory, or a broker over the protocol.

    ``log(*args, input=...)`` runs ``headwater ARGS...`` against it; the same test body
    then checks that both give the same results.
    """

    def __init__(self, data: Path, bootstrap: str | None = None) -> None:
        self.data = data
        self.bootstrap = bootstrap

    @property
    def kind(self) -> str:
        """``data`` or ``broker``."""
        return "data" if self.bootstrap is None else "broker"

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        if self.bootstrap is None:
            return run_headwater(self.data, *args, input=input, env=env)
        return run_headwater(None, *self._with_bootstrap(args), input=input, env=env)

    def command(self, *args: str) -> list[str]:
        """The argv that runs ``headwater ARGS...`` against this log."""
        if self.bootstrap is None:
            return [HEADWATER, "--data", str(self.data), *args]
        return [HEADWATER, *self._with_bootstrap(args)]

    def _with_bootstrap(self, args: tuple[str, ...]) -> list[str]:
        # Options go before a '--', after which everything is an argument.
        end = args.index("--") if "--" in args else len(args)
        assert self.bootstrap is not None
        return [*args[:end], "--bootstrap", self.bootstrap, *args[end:]]
