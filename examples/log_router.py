"""A log-line router: parse text lines, route them by level, dead-letter the unparsable.

The app reads plain-text log lines (``StrSerde``) from ``logs``, parses each into a
record (``time level service message``), and splits the stream by level: errors to
``logs-error``, warnings to ``logs-warning``, the rest to ``logs-other``. Lines that
mention a user also go to ``logs-audit`` (a two-way ``branch``). A line that does not
parse goes to ``logs-dlq`` with the parser's error and its source position in headers.

Run as a script, it writes a few hundred sample lines to a fresh data directory, runs
the app until caught up and prints where the lines went::

    python examples/log_router.py [DATA_DIR]         # default: ./log-router-data
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio

from headwater.processing import App, StrSerde
from headwater.store import NewRecord, TopicConfig, open_store

LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR")
SERVICES = ("api", "billing", "search")

app = App("log-router")
lines = app.stream("logs", serde=StrSerde(), on_error="dead_letter")


def parse(line: str) -> dict[str, Any]:
    """Parse ``TIME LEVEL SERVICE MESSAGE...``.

    :raises ValueError: if the line has fewer than four fields or an unknown level.
    """
    time, level, service, message = line.split(" ", 3)
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")
    return {"time": time, "level": level, "service": service, "message": message}


parsed = lines.map(parse)
routes = parsed.split(
    {"error": lambda r: r["level"] == "ERROR", "warning": lambda r: r["level"] == "WARN"},
    rest="other",
)
routes["error"].to("logs-error")
routes["warning"].to("logs-warning")
routes["other"].to("logs-other")
audit, _ = parsed.branch(lambda r: "user=" in r["message"])
audit.to("logs-audit")


def sample_lines(count: int) -> list[str]:
    """Return ``count`` log lines from a fixed seed, a few of them malformed."""
    rng = random.Random(11)
    out = []
    for i in range(count):
        level = rng.choice(LEVELS)
        user = f" user={rng.randrange(100)}" if rng.random() < 0.3 else ""
        time = f"2024-06-01T00:{i // 60:02d}:{i % 60:02d}Z"
        out.append(f"{time} {level} {rng.choice(SERVICES)} request {i}{user}")
    out[17] = "garbage"
    out[101] = "2024-06-01T00:01:41Z TRACE api too chatty"
    return out


async def load(data: Path, count: int) -> None:
    """Store the sample lines in topic ``logs``."""
    async with open_store(data) as store:
        await store.create_topic("logs", TopicConfig(partitions=1))
        await store.append("logs", [NewRecord(line.encode()) for line in sample_lines(count)])


async def summary(data: Path) -> None:
    """Print how many lines each output received, and the dead letters."""
    async with open_store(data, read_only=True) as store:
        for topic in ("logs-error", "logs-warning", "logs-other", "logs-audit", "logs-dlq"):
            records = await store.partition(topic, 0).read_records(0, 1 << 22)
            print(f"{topic}: {len(records)} lines")
            if topic == "logs-dlq":
                for record in records:
                    headers = {k: (v or b"").decode() for k, v in record.headers}
                    print(
                        f"  {headers['headwater.source']} {record.value!r}: "
                        f"{headers['headwater.error.message']}"
                    )


def main() -> None:
    """Load sample lines, route them, print where they went."""
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("log-router-data")
    shutil.rmtree(data, ignore_errors=True)
    anyio.run(load, data, 300)
    stats = app.run(until_caught_up=True, data_dir=data)
    print(f"routed {stats.records_in} lines ({stats.dead_lettered} dead letters)")
    anyio.run(summary, data)


if __name__ == "__main__":
    main()
