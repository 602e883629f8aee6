"""Orders: matched with their payment within 10 minutes (windowed stream-stream join) and
enriched with their customer (stream-table join).

Each order of ``orders`` is keyed by its order id and joined with the payment of
``payments`` for that order that came at most 10 minutes before or after it (event
time: the records' timestamps); an order without a payment in that time goes on too,
with ``"paid": false``, once its window has closed (Kafka Streams' left join). Then it is
keyed by its customer and joined with ``customers``, a table (the latest record per
customer id: ``produce --key id`` writes such a topic) as it is when the order gets
there. Results go to ``orders-paid``.

Run as a script, it stores sample customers in a fresh data directory and runs the app
(the table is loaded), then stores two hours of orders and payments and runs it again
until it has consumed them (the table comes back from its changelog), and prints a
summary::

    python examples/orders.py [DATA_DIR]        # default: ./orders-data

The same app runs under the CLI: ``headwater run examples/orders.py``.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson

from headwater.processing import App, AppConfig, encode_key
from headwater.store import NewRecord, TopicConfig, open_store

sys.path.insert(0, str(Path(__file__).parent))
from clickstream import start_afresh

DATA_DIR = Path("orders-data")
START_MS = 1_717_200_000_000
WITHIN_MS = 10 * 60 * 1000
# One partition, so that the sample (two hours stored at once) reaches the join in time
# order; a live feed spreads over partitions as it arrives.
PARTITIONS = 1

Record = dict[str, Any]

# A task of a join waits up to a second for a side that has nothing yet, so that one
# side does not run ahead of the other (and leave the other's records late).
app = App("orders", config=AppConfig(max_task_idle_ms=1000))
customers = app.table("customers")
orders = app.stream("orders")
payments = app.stream("payments")


def with_payment(order: Record, payment: Record | None) -> Record:
    """Say whether (and how) the order was paid."""
    if payment is None:
        return {**order, "paid": False}
    return {**order, "paid": True, "method": payment["method"]}


def with_customer(order: Record, customer: Record | None) -> Record:
    """Add the customer's name and tier (None for an unknown customer)."""
    if customer is None:
        return {**order, "name": None, "tier": None}
    return {**order, "name": customer["name"], "tier": customer["tier"]}


paid = orders.key_by(lambda o: o["order"]).left_join(
    payments.key_by(lambda p: p["order"]), with_payment, within_ms=WITHIN_MS, name="paid"
)
paid.key_by(lambda o: o["customer"]).left_join(customers, with_customer, name="with-customer").to(
    "orders-paid"
)


def sample() -> tuple[list[Record], list[tuple[int, Record]], list[tuple[int, Record]]]:
    """Return sample customers, and orders and payments with their timestamps."""
    rng = random.Random(7)
    people = [
        {"id": f"c{i}", "name": f"customer {i}", "tier": rng.choice(["gold", "basic"])}
        for i in range(20)
    ]
    placed, paying = [], []
    for n in range(240):
        ts = START_MS + n * 30_000
        customer = f"c{rng.randrange(22)}"  # c20 and c21 are no customers of ours
        placed.append(
            (ts, {"order": f"o{n}", "customer": customer, "total": rng.randrange(5, 500)})
        )
        if rng.random() < 0.9:
            delay = rng.randrange(0, 15 * 60 * 1000)  # some pay later than 10 minutes
            paying.append((ts + delay, {"order": f"o{n}", "method": rng.choice(["card", "cash"])}))
    paying.sort(key=lambda p: p[0])
    return people, placed, paying


async def load_customers(data: Path, people: list[Record]) -> None:
    """Store the customers, keyed by id as ``produce --key id`` keys them."""
    async with open_store(data) as store:
        await store.create_topic("customers", TopicConfig(partitions=PARTITIONS))
        await store.append(
            "customers", [NewRecord(orjson.dumps(c), encode_key(c["id"])) for c in people]
        )


async def load_orders(
    data: Path, placed: list[tuple[int, Record]], paying: list[tuple[int, Record]]
) -> None:
    """Store the orders and payments, timestamped when they happened."""
    async with open_store(data) as store:
        for topic, events in (("orders", placed), ("payments", paying)):
            if not store.has_topic(topic):
                await store.create_topic(topic, TopicConfig(partitions=PARTITIONS))
            for p in range(PARTITIONS):
                mine = [NewRecord(orjson.dumps(e), None, ts) for ts, e in events[p::PARTITIONS]]
                await store.append(topic, mine, partition=p)


async def summary(data: Path) -> None:
    """Print how the orders were matched."""
    async with open_store(data, read_only=True) as store:
        results = [
            orjson.loads(record.value or b"{}")
            for partition in store.partitions("orders-paid")
            for record in await partition.read_records(0, 1 << 22)
        ]
    print(f"orders-paid: {len(results)} records")
    print("  paid within 10 minutes:", sum(r["paid"] for r in results))
    print("  unpaid when their window closed:", sum(not r["paid"] for r in results))
    print("  unknown customers:", sum(r["name"] is None for r in results))
    print("  by tier:", dict(sorted(Counter(str(r["tier"]) for r in results).items())))


def main() -> None:
    """Load customers, run; load orders and payments, run again; print a summary."""
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR
    start_afresh(data)
    people, placed, paying = sample()
    anyio.run(load_customers, data, people)
    # Create the order topics before the first run (empty), so that the app can start.
    anyio.run(load_orders, data, [], [])
    app.run(until_caught_up=True, data_dir=data)
    print(f"stored {len(people)} customers; the table is loaded")
    anyio.run(load_orders, data, placed, paying)
    stats = app.run(until_caught_up=True, data_dir=data)
    print(
        f"stored {len(placed)} orders and {len(paying)} payments; read {stats.records_in} records"
    )
    anyio.run(summary, data)


if __name__ == "__main__":
    main()
