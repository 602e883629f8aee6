"""Clickstream enrichment: a processing app end to end (what `make run` runs).

The app reads click events (JSON) from ``clicks``, drops the fast ones, adds each
click's site section and whether it was slow, looks up each user's country with an async
call (bounded concurrency, retried with backoff), and writes ``clicks-enriched``; the
slow clicks also go, keyed by user, to ``slow-clicks``. Per user and 10-second
event-time window (on ``ts``) it counts the clicks and sums their ``ms``, and writes each
window's final result to ``clicks-per-user-10s`` once the window closes (the standard
workload W2 of ``bench/pipeline_bench.py``). Events that are not JSON or lack
a field go to the dead-letter topic ``clicks-dlq`` with the error in their headers.

Run as a script, it starts a fresh data directory, stores the sample events of
``examples/data/clicks.jsonl`` in a 2-partition topic, runs the app until it has
consumed them, and prints what each derived topic holds and one record's lineage::

    python examples/clickstream.py [DATA_DIR]        # default: ./clickstream-data

The data directory is the example's own, beside the CLI's default ``./headwater-data``
rather than in it (a data directory inside another is not one of its topics), and stays
there afterwards: ``headwater --data clickstream-data topics list`` shows what it wrote.

The same app runs under the CLI: ``headwater run examples/clickstream.py``.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson

from headwater.processing import App, Retry, windows
from headwater.store import NewRecord, TopicConfig, is_data_directory, open_store

SAMPLE = Path(__file__).parent / "data" / "clicks.jsonl"
DATA_DIR = Path("clickstream-data")
SECTIONS = {"/": "home", "/search": "search", "/cart": "checkout", "/checkout": "checkout"}
COUNTRIES = ("FR", "DE", "JP", "BR", "US", "IN", "NG")

Event = dict[str, Any]

app = App("clickstream")
clicks = app.stream("clicks", on_error="dead_letter")


def enrich(event: Event) -> Event:
    """Add the page's site section and whether the click was slow (> 500 ms)."""
    page = event["page"]
    section = SECTIONS.get(page) or page.strip("/").split("/")[0] or "home"
    return {**event, "section": section, "slow": event["ms"] > 500}


async def add_country(event: Event) -> Event:
    """Look the user's country up (a stand-in for a call to a geo service)."""
    await anyio.sleep(0.001)
    number = int(event["user"].rsplit("-", 1)[1])
    return {**event, "country": COUNTRIES[number % len(COUNTRIES)]}


not_fast = clicks.filter(lambda e: e["ms"] > 100)
enriched = not_fast.map(enrich).map_async(
    add_country, concurrency=32, retry=Retry(attempts=3, backoff_s=0.05)
)
enriched.to("clicks-enriched")
enriched.filter(lambda e: e["slow"]).key_by(lambda e: e["user"]).to("slow-clicks")

per_user = (
    not_fast.key_by(lambda e: e["user"])
    .window(windows.tumbling(seconds=10), timestamp=lambda e: e["ts"], grace_ms=0)
    .aggregate(
        initial=lambda: {"count": 0, "sum": 0},
        add=lambda acc, e: {"count": acc["count"] + 1, "sum": acc["sum"] + e["ms"]},
        name="per-user-10s",
    )
    .final()  # one result per window, when it closes
)
per_user.to("clicks-per-user-10s")  # {"key": user, "start": ms, "end": ms, "value": {...}}


async def load(data: Path, partitions: int = 2) -> int:
    """Store the sample events (one record per line, as sent) in topic ``clicks``."""
    lines = SAMPLE.read_bytes().splitlines()
    async with open_store(data) as store:
        await store.create_topic("clicks", TopicConfig(partitions=partitions))
        records = [NewRecord(value=line) for line in lines if line.strip()]
        for p in range(partitions):
            await store.append("clicks", records[p::partitions], partition=p)
        return len(records)


async def summary(data: Path) -> None:
    """Print what each derived topic holds, and the lineage of one enriched record."""
    async with open_store(data, read_only=True) as store:
        for topic in ("clicks-enriched", "slow-clicks", "clicks-per-user-10s", "clicks-dlq"):
            records = [
                record
                for partition in store.partitions(topic)
                for record in await partition.read_records(0, 1 << 22)
            ]
            print(f"{topic}: {len(records)} records")
            if topic == "clicks-enriched":
                countries = Counter(orjson.loads(r.value or b"{}")["country"] for r in records)
                print("  by country:", dict(sorted(countries.items())))
                first = records[0]
                print("  first:", first.value.decode() if first.value else None)
                print("  its lineage header:", dict(first.headers)["headwater.source"].decode())
            if topic == "clicks-per-user-10s":
                results = [orjson.loads(r.value or b"{}") for r in records]
                closed = sorted({(r["start"], r["end"]) for r in results})
                busiest = max(results, key=lambda r: (r["value"]["count"], r["key"]))
                print(f"  {len(closed)} windows closed, from {closed[0][0]} to {closed[-1][1]}")
                print(
                    f"  busiest: {busiest['key']} with {busiest['value']['count']} clicks "
                    f"({busiest['value']['sum']} ms) in [{busiest['start']}, {busiest['end']})"
                )
            if topic == "clicks-dlq":
                for record in records:
                    headers = {k: (v or b"").decode() for k, v in record.headers}
                    print(
                        f"  {headers['headwater.source']}: {headers['headwater.error.message']}"
                        f" (in {headers['headwater.error.operator']})"
                    )


def start_afresh(data: Path) -> None:
    """Remove what an earlier run left in ``data``; refuse anything but a data directory."""
    if data.exists() and any(data.iterdir()):
        if not is_data_directory(data):
            sys.exit(f"clickstream: {data} is not a headwater data directory; not clearing it")
        shutil.rmtree(data)


def main() -> None:
    """Load the sample events, run the app until caught up, print a summary."""
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR
    start_afresh(data)
    stored = anyio.run(load, data)
    print(f"stored {stored} sample events in 'clicks' (2 partitions)")
    print(app.describe())
    stats = app.run(until_caught_up=True, data_dir=data)
    print(
        f"processed {stored} events ({stats.records_in} records read, with those read back "
        f"from the repartition topic) in {stats.elapsed_s:.2f} s: wrote {stats.records_out} "
        f"records, {stats.dead_lettered} dead letters"
    )
    anyio.run(summary, data)
    print(f"the log stays in {data}: headwater --data {data} topics list")


if __name__ == "__main__":
    main()
