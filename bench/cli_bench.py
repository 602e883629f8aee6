"""Measure the CLI's per-line work: ``produce``'s line parser and ``consume``'s formats.

Run from the repository root::

    .venv/bin/python bench/cli_bench.py
    .venv/bin/python bench/cli_bench.py --baseline /tmp/old_lines.py

Prints lines per second for the parser (JSON lines unkeyed and keyed by a field, raw lines,
``KEY:VALUE`` lines) and records per second for each ``consume --format``. Each figure is
the best of ``--rounds`` rounds of CPU time (the least disturbed by other work). With
``--baseline FILE`` (a Python file defining the old ``LineParser(line_format,
max_batch_bytes)``, or an older ``LineParser(key_field, max_batch_bytes)``, e.g. ``git
show REV:cli/_lines.py``, loaded as a module of ``headwater.cli``), the JSON parser cases
run it too, interleaved round by round with the current one, and the ratio
current/baseline is printed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from headwater.cli._formats import formatter
from headwater.cli._lines import LineFormat, LineParser
from headwater.store import Record

MAX_BATCH = 1 << 20


def lines(count: int) -> list[bytes]:
    """JSON lines like a clickstream's."""
    return [
        orjson.dumps({"user": f"user-{i % 500}", "page": f"/p/{i % 37}", "ms": i % 900, "n": i})
        for i in range(count)
    ]


def drain(chunks: Iterable[Any]) -> int:
    return sum(len(chunk.records) for chunk in chunks)


def parse_new(data: bytes, line_format: LineFormat) -> Callable[[], int]:
    def run() -> int:
        parser = LineParser(line_format, MAX_BATCH)
        return drain(parser.feed(data)) + drain(parser.end())

    return run


def parse_old(module: Any, data: bytes, key_field: str | None) -> Callable[[], int]:
    # A baseline from before LineFormat took the key field itself.
    line_format = getattr(module, "LineFormat", None)
    first = key_field if line_format is None else line_format(key_field=key_field)

    def run() -> int:
        parser = module.LineParser(first, MAX_BATCH)
        return drain(parser.feed(data)) + drain(parser.end())

    return run


def timed(func: Callable[[], int]) -> float:
    """CPU time of one call: what the work costs, not how long others held the cores.

    The cyclic garbage collector is off during the call (as in ``timeit``): when it would
    run depends on what earlier rounds left, not on the code measured.
    """
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        func()
        return time.process_time() - start
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="a file with the old LineParser")
    args = parser.parse_args()

    json_lines = lines(args.lines)
    data = b"\n".join(json_lines) + b"\n"
    keyed = b"\n".join(b"user-%d:%b" % (i % 500, line) for i, line in enumerate(json_lines))
    baseline = None
    if args.baseline is not None:
        spec = importlib.util.spec_from_file_location("headwater.cli._baseline", args.baseline)
        assert spec is not None and spec.loader is not None
        baseline = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = baseline  # its dataclasses look their module up
        spec.loader.exec_module(baseline)

    cases: list[tuple[str, Callable[[], int], Callable[[], int] | None]] = [
        ("json", parse_new(data, LineFormat()), baseline and parse_old(baseline, data, None)),
        (
            "json --key user",
            parse_new(data, LineFormat(key_field="user")),
            baseline and parse_old(baseline, data, "user"),
        ),
        ("raw", parse_new(data, LineFormat(raw=True)), None),
        ("json -K :", parse_new(keyed + b"\n", LineFormat(key_delimiter=b":")), None),
    ]
    print(f"produce's line parser, {args.lines:,} lines, best of {args.rounds} rounds:")
    for name, current, old in cases:
        assert current() == args.lines
        now: list[float] = []
        before: list[float] = []
        for round_ in range(args.rounds):  # interleaved, so that both see the same machine
            if old is not None and round_ % 2:  # and each goes first half the time
                before.append(timed(old))
            now.append(timed(current))
            if old is not None and not round_ % 2:
                before.append(timed(old))
        rate = args.lines / min(now)
        line = f"  {name:<16} {rate:>12,.0f} lines/s"
        if before:
            old_rate = args.lines / min(before)
            line += f"   baseline {old_rate:>12,.0f} lines/s   ratio {rate / old_rate:.3f}"
        print(line)

    records = [
        Record(i, 1_700_000_000_000 + i, b"user-%d" % (i % 500), value, (("h", b"v"),))
        for i, value in enumerate(json_lines)
    ]
    print(f"consume's formats, {len(records):,} records, best of {args.rounds} rounds:")
    for spec in ("value", "json", "%t/%p/%o %k %s %h\\n"):
        render = formatter("clicks", spec)
        times = [timed(lambda render=render: len(render(0, records))) for _ in range(args.rounds)]
        print(f"  {spec:<22} {len(records) / min(times):>12,.0f} records/s")


if __name__ == "__main__":
    main()
