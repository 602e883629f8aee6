"""Measure the record batch codec: records per second to encode and decode, per codec.

Run from the repository root::

    .venv/bin/python bench/codec_bench.py            # 1,000 records of ~100-byte values
    .venv/bin/python bench/codec_bench.py --records 500 --value-bytes 1000 --codec lz4

Each figure is the best of ``--rounds`` timed rounds (the least disturbed by other work on
the machine). ``decode`` includes the CRC check; ``decode (no verify)`` skips it. The
"loop" line is the time of one empty ``for`` iteration, to compare machines.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable

from headwater.store._records import (
    Compression,
    NewRecord,
    decode_records,
    encode_batch,
)


def best_seconds(func: Callable[[], object], rounds: int, min_round_s: float = 0.05) -> float:
    """Return the best per-call time of ``func`` over ``rounds`` rounds."""
    calls = 1
    while True:  # size a round so that timer resolution does not matter
        start = time.perf_counter()
        for _ in range(calls):
            func()
        if time.perf_counter() - start >= min_round_s:
            break
        calls *= 2
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            func()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def loop_ns(rounds: int) -> float:
    """Return the time of one empty loop iteration in ns: a rough machine speed."""

    def loop() -> None:
        for _ in range(100_000):
            pass

    return best_seconds(loop, rounds) / 100_000 * 1e9


def make_values(count: int, size: int, vary: int, rng: random.Random) -> list[bytes]:
    """Return JSON-like values (compressible like real events) of size +- vary bytes."""
    values = []
    for i in range(count):
        n = size + (rng.randint(-vary, vary) if vary else 0)
        body = b'{"user":%d,"event":"click","page":"/p/%d","ts":%d,"pad":"' % (
            rng.randrange(10**6),
            rng.randrange(1000),
            1_700_000_000_000 + i,
        )
        filler = bytes(
            rng.choice(b"abcdefghij0123456789") for _ in range(max(n - len(body) - 2, 0))
        )
        values.append((body + filler + b'"}')[:n])
    return values


def report(name: str, records: list[NewRecord], codecs: list[Compression], rounds: int) -> None:
    """Print encode and decode rates of one kind of batch for each codec."""
    count = len(records)
    print(f"\n{name}: {count} records")
    print(
        f"  {'codec':6} {'bytes':>8} {'encode rec/s':>14} {'decode rec/s':>14} {'(no verify)':>14}"
    )
    for codec in codecs:
        batch = encode_batch(records, compression=codec, now_ms=1_700_000_000_000)
        assert [r.value for r in decode_records(batch)] == [r.value for r in records]
        encode = best_seconds(
            lambda codec=codec: encode_batch(records, compression=codec, now_ms=1), rounds
        )
        decode = best_seconds(lambda batch=batch: decode_records(batch), rounds)
        unverified = best_seconds(lambda batch=batch: decode_records(batch, verify=False), rounds)
        print(
            f"  {codec.name.lower():6} {len(batch):8} {count / encode:14,.0f} "
            f"{count / decode:14,.0f} {count / unverified:14,.0f}"
        )


def main() -> None:
    """Parse the command line and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--codec", choices=[c.name.lower() for c in Compression], action="append")
    args = parser.parse_args()
    codecs = [Compression[c.upper()] for c in args.codec] if args.codec else list(Compression)
    rng = random.Random(1)
    n, size = args.records, args.value_bytes
    print(f"Python {sys.version.split()[0]}; empty loop iteration {loop_ns(args.rounds):.1f} ns")
    fixed = [NewRecord(v) for v in make_values(n, size, 0, rng)]
    report(f"values of {size} bytes, no key, no headers", fixed, codecs, args.rounds)
    varied = [NewRecord(v) for v in make_values(n, size, size // 5, rng)]
    report(
        f"values of {size} +- {size // 5} bytes, no key, no headers", varied, codecs, args.rounds
    )
    keyed = [
        NewRecord(v, key=b"user-%d" % rng.randrange(10**4), timestamp=1_700_000_000_000 + i)
        for i, v in enumerate(make_values(n, size, size // 5, rng))
    ]
    report("keyed, own timestamps", keyed, [Compression.NONE], args.rounds)
    with_headers = [
        NewRecord(r.value, r.key, r.timestamp, [("trace", b"abc123"), ("origin", None)])
        for r in keyed
    ]
    report("keyed, own timestamps, two headers", with_headers, [Compression.NONE], args.rounds)


if __name__ == "__main__":
    main()
