"""`make run` leaves its log where the README says, and the README's commands show it.

The clickstream example (what `make run` runs) is run as `make run` runs it: from the
working directory, with no arguments. Then the README's commands for looking at its data
are taken from the README itself and run, so that the two never drift apart; and the
CLI's default data directory is still the user's own.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import HEADWATER, env_without_data

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "clickstream.py"
README = ROOT / "README.md"


def readme_commands() -> list[list[str]]:
    """The README's commands that look at the example's data directory."""
    lines = re.findall(r"^headwater --data clickstream-data .*$", README.read_text(), re.M)
    return [shlex.split(line.split("#")[0])[1:] for line in lines]


@pytest.mark.slow
def test_make_run_leaves_its_log_where_the_readme_says(tmp_path: Path) -> None:
    env = env_without_data()
    ran = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines()[-1] == (
        "the log stays in clickstream-data: headwater --data clickstream-data topics list"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clickstream-data"]

    commands = readme_commands()
    assert [c[2:4] for c in commands] == [
        ["topics", "list"],
        ["consume", "clicks-enriched"],
        ["consume", "clicks-dlq"],
        ["trace", "clicks-enriched"],
    ]
    outputs = []
    for command in commands:
        result = subprocess.run(
            [HEADWATER, *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), command
        outputs.append(result.stdout)
    listed, enriched, dead, traced = outputs
    for topic in ("clicks", "clicks-enriched", "slow-clicks", "clicks-dlq"):
        assert f"│ {topic} " in listed
    assert len(enriched.splitlines()) == 3
    assert len(dead.splitlines()) == 3
    assert "<- clicks/0/" in traced

    # The CLI's default directory is not the example's: a user's topic of any name is
    # made, fed and read there as usual.
    def hw(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HEADWATER, *args],
            cwd=tmp_path,
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert hw("topics", "create", "clickstream").returncode == 0
    assert hw("produce", "clickstream", input='{"n":1}\n').returncode == 0
    assert hw("consume", "clickstream").stdout == '{"n":1}\n'
    assert "clicks-enriched" not in hw("topics", "list").stdout


def test_the_example_clears_only_a_data_directory(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    ran = subprocess.run(
        [sys.executable, str(EXAMPLE), str(precious)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 1
    assert ran.stderr.strip() == (
        f"clickstream: {precious} is not a headwater data directory; not clearing it"
    )
    assert (precious / "thesis.tex").read_text() == "years of work"
