"""The `make run` job, examples/log_tour.py, runs end to end through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOUR = Path(__file__).parents[2] / "examples" / "log_tour.py"


def test_log_tour(tmp_path: Path) -> None:
    data = tmp_path / "tour"
    data.mkdir()
    (data / "left-over").write_text("from an earlier run")
    result = subprocess.run(
        [sys.executable, str(TOUR), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert "$ headwater topics create clicks --partitions 3" in out
    assert "acknowledged 2000 records (PARTITION:OFFSET)" in out
    assert "stored 1000 records in 'clicks'" in out
    assert "all records: 3000 lines" in out
    assert "with metadata: 2 lines" in out
    assert "partition 0 from latest: 0 lines" in out
    assert "are numbers 2000 and up" in out
    assert "summary: stored 3000 events, read back 3000 (all)" in out
    assert "1000 (since " in out
    assert not (data / "left-over").exists()  # the directory was started afresh
