"""A command imports what it runs, not the whole toolkit: start-up is paid on every call."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from headwater.cli._main import run
status = run(sys.argv[1:])
heavy = sorted(
    m
    for m in ("headwater.processing", "headwater.broker", "prometheus_client", "hypercorn")
    if m in sys.modules
)
print(status, *heavy)
"""


@pytest.mark.parametrize(
    "command", ["consume", "produce", "groups", "repair", "topics", "transactions"]
)
def test_log_commands_do_not_import_the_runtime_the_broker_or_metrics(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines()[-1] == "0"


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from headwater.cli._main import run; run(['--help'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in (
        "topics",
        "produce",
        "consume",
        "groups",
        "broker",
        "connect",
        "run",
        "trace",
        "repair",
        "top",
        "ui",
    ):
        assert f"  {command} " in out
