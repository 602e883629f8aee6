"""A tour of the headwater log, driven through the ``headwater`` command (what `make run` runs).

It creates a topic with three partitions in a fresh data directory, stores a few thousand
clickstream events keyed by user, reads them back from an offset and from a point in
time, and describes the topic. Every step prints the command it runs and what came back.

Run it from the repository root: ``python examples/log_tour.py [DATA_DIR]``; the data
directory (``./log-tour-data`` by default, its own rather than inside the CLI's default one)
is removed first, so it can be run again.
"""

from __future__ import annotations

import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

HEADWATER = str(Path(sys.executable).with_name("headwater"))
TOPIC = "clicks"
PAGES = ["/", "/search", "/products/42", "/products/7", "/cart", "/checkout", "/help"]


def headwater(data: Path, *args: str, stdin: str | None = None) -> str:
    """Run ``headwater --data DATA ARGS...``, echo it, and return its stdout."""
    print(f"\n$ headwater {shlex.join(args)}" + (" < events.jsonl" if stdin else ""))
    result = subprocess.run(
        [HEADWATER, "--data", str(data), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.stderr:
        print("  " + result.stderr.strip().replace("\n", "\n  "))
    if result.returncode != 0:
        raise SystemExit(f"headwater exited with status {result.returncode}")
    return result.stdout


def events(count: int, rng: random.Random, start: int) -> str:
    """Return ``count`` clickstream events as JSON lines."""
    lines = []
    for i in range(start, start + count):
        event = {
            "event": i,
            "user": f"user-{rng.randrange(200)}",
            "page": rng.choice(PAGES),
            "ms": int(rng.expovariate(1 / 120)),
        }
        lines.append(json.dumps(event))
    return "\n".join(lines) + "\n"


def show(label: str, output: str, first: int = 3) -> list[str]:
    """Print how many lines ``output`` has and the first few; return the lines."""
    lines = output.splitlines()
    print(f"  {label}: {len(lines)} lines")
    for line in lines[:first]:
        print(f"    {line}")
    return lines


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "log-tour-data")
    shutil.rmtree(data, ignore_errors=True)
    rng = random.Random(2024)
    began = time.perf_counter()
    print(f"headwater log tour: data directory {data}")

    headwater(data, "topics", "create", TOPIC, "--partitions", "3")

    # 1. Produce 2,000 events keyed by user: each user's events land in one partition.
    acks = headwater(data, "produce", TOPIC, "--key", "user", stdin=events(2000, rng, 0))
    placed = Counter(line.split(":")[0] for line in acks.splitlines())
    print(
        f"  acknowledged {sum(placed.values())} records (PARTITION:OFFSET), first: "
        f"{', '.join(acks.splitlines()[:3])}"
    )
    print("  per partition: " + ", ".join(f"{p}: {n}" for p, n in sorted(placed.items())))

    # 2. Note the time, then produce 1,000 more; reading "from" that time returns just these.
    time.sleep(0.02)
    midpoint = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(0.02)
    headwater(data, "produce", TOPIC, "--key", "user", "--quiet", stdin=events(1000, rng, 2000))

    # 3. Read everything, then from offset 600 in each partition, then from the noted time.
    everything = show("all records", headwater(data, "consume", TOPIC, "--from", "earliest"))
    from_offset = show("from offset 600", headwater(data, "consume", TOPIC, "--from", "600"))
    from_time = show(f"since {midpoint}", headwater(data, "consume", TOPIC, "--from", midpoint))
    first_new = min(json.loads(line)["event"] for line in from_time) if from_time else None
    print(f"  the events since {midpoint} are numbers {first_new} and up")

    # 4. Records with their metadata, and one partition from its latest offset (nothing yet).
    show("with metadata", headwater(data, "consume", TOPIC, "--show-meta", "--max", "2"))
    show(
        "partition 0 from latest", headwater(data, "consume", TOPIC, "-p", "0", "--from", "latest")
    )

    # 5. The topic: its settings and each partition's offsets, size and segments.
    print(headwater(data, "topics", "describe", TOPIC).rstrip())

    print(
        f"\nsummary: stored 3000 events, read back {len(everything)} (all), "
        f"{len(from_offset)} (from offset 600), {len(from_time)} (since {midpoint}); "
        f"{time.perf_counter() - began:.1f} s"
    )


if __name__ == "__main__":
    main()
