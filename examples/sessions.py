"""User sessions: session windows over the sample clicks.

A user's session is a run of clicks with no gap longer than 3 seconds between two of
them (event time, from ``ts``); a click that falls between two sessions of its user
merges them. Each session's summary (clicks, distinct pages, its duration) is written
to ``user-sessions`` when it closes: once the stream time is 3 seconds past its last
click. Events that are not JSON or lack a field are skipped (and counted).

Run as a script, it stores the sample events of ``examples/data/clicks.jsonl`` in a
fresh data directory (one partition), runs the app until it has consumed them, and
prints a summary::

    python examples/sessions.py [DATA_DIR]        # default: ./sessions-data

The same app runs under the CLI: ``headwater run examples/sessions.py``.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson

from headwater.processing import App, windows

sys.path.insert(0, str(Path(__file__).parent))
from clickstream import load, start_afresh

DATA_DIR = Path("sessions-data")
GAP = timedelta(seconds=3)

Session = dict[str, Any]

app = App("sessions")


def add(session: Session, click: dict[str, Any]) -> Session:
    """Count a click into a session."""
    pages = (
        session["pages"]
        if click["page"] in session["pages"]
        else [*session["pages"], click["page"]]
    )
    return {"clicks": session["clicks"] + 1, "pages": pages}


def merge(a: Session, b: Session) -> Session:
    """Join two sessions that a click bridged."""
    return {
        "clicks": a["clicks"] + b["clicks"],
        "pages": a["pages"] + [p for p in b["pages"] if p not in a["pages"]],
    }


sessions = (
    app.stream("clicks", on_error="skip")
    .key_by(lambda e: e["user"])
    .window(windows.session(GAP), timestamp=lambda e: e["ts"], grace_ms=0)
    .aggregate(initial=lambda: {"clicks": 0, "pages": []}, add=add, merge=merge, name="sessions")
    .final()
)
sessions.map(
    lambda s: {
        "user": s.key,
        "start": s.start,
        "seconds": (s.end - s.start) / 1000,
        "clicks": s.value["clicks"],
        "pages": len(s.value["pages"]),
    }
).to("user-sessions")


async def summary(data: Path) -> None:
    """Print how many sessions closed, and the longest."""
    from headwater.store import open_store  # noqa: PLC0415

    async with open_store(data, read_only=True) as store:
        found = [
            orjson.loads(record.value or b"{}")
            for partition in store.partitions("user-sessions")
            for record in await partition.read_records(0, 1 << 22)
        ]
    print(f"user-sessions: {len(found)} sessions closed")
    longest = max(found, key=lambda s: (s["clicks"], s["user"]))
    print(
        f"  most clicks: {longest['user']}, {longest['clicks']} clicks on {longest['pages']} "
        f"pages in {longest['seconds']:.3f} s"
    )
    print(f"  sessions of one click: {sum(s['clicks'] == 1 for s in found)}")


def main() -> None:
    """Load the sample events, run the app until caught up, print a summary."""
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR
    start_afresh(data)
    # One partition: the sample (a minute stored at once) reaches the windows in time
    # order, so no click is late; a live feed spreads over partitions as it arrives.
    stored = anyio.run(load, data, 1)
    stats = app.run(until_caught_up=True, data_dir=data)
    print(f"processed {stored} events, skipped {stats.skipped}")
    anyio.run(summary, data)


if __name__ == "__main__":
    main()
