"""Where a pipeline's time per event goes, part by part, from a sampling profile.

Runs W1 or W2 of ``pipeline_bench.py`` once in a worker process under py-spy (sampling
from outside, so the run goes at nearly its own speed), sorts every sample of a busy
thread into a part by the frames on its stack, and prints each part's share of the run's
CPU time (measured by the worker itself) in ns per input event. The parts that the plain
loop does too (``orjson.loads``, ``orjson.dumps`` of the results, the workload's own
functions) are listed apart from the rest, which is the pipeline's cost beyond the loop:
reading, bookkeeping, lineage, encoding, writing, committing, state.

A C function (orjson, the store's speedups) is charged to the Python frame that called
it: ``orjson.loads`` of the input is the source step's ``apply_each``, ``orjson.dumps``
of the outputs the sink's. Samples of the threads' idle waits are left out.

Usage: ``python bench/pipeline_parts.py W1|W2 [--events N] [--rate HZ] [--dir DIR]``
(py-spy must be installed: ``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import orjson
from pipeline_bench import Timed, load

#: (part, frames): a sample belongs to the part of the innermost frame on its stack that
#: matches one of its patterns ("Class.function" or "function", as py-spy names frames).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("the workload's functions", ("keep", "enrich", "user", "event_time", "initial", "add")),
    ("reading", ("InProcessBackend.fetch",)),
    ("encode: record batch", ("encode_within",)),
    ("encode: keys", ("_serialise_keys",)),
    ("write", ("InProcessBackend.produce", "Runtime._write")),
    ("commit", ("Runtime._commit", "Runtime._flush_stores")),
    ("lineage: dedupe", ("StatefulStep.uncovered",)),
    ("state: window fold, close, emit", ("WindowedAggregateStep.push",)),
    ("encode: values (orjson.dumps)", ("_serialise",)),
    ("placement, lineage columns", ("Pipeline._place", "Pipeline._outcome")),
    ("decode (orjson.loads)", ("SourceStep.start",)),
    ("bookkeeping: operators", ("Pipeline.process", "Pipeline.advance")),
    ("bookkeeping: runtime", ("Runtime._read_partition_loop",)),
    ("write (background threads)", ("Thread._bootstrap",)),
]
#: The parts the plain loop has too (for W1: it decodes and encodes each event once).
PLAIN_PARTS = {"the workload's functions", "decode (orjson.loads)", "encode: values (orjson.dumps)"}
#: Frames of a thread waiting for work (not CPU time).
IDLE = ("WorkerThread._work",)
BENCH = Path(__file__).with_name("pipeline_bench.py")
#: The frame of the timed run in the worker's main thread.
TIMED = "run_once ("
_LINE = re.compile(r" \([^)]*\)$")


def part_of(frames: list[str]) -> str:
    """Return the part a sample's stack (outermost first) belongs to."""
    names = [_LINE.sub("", frame) for frame in frames]
    for name in reversed(names):
        for part, patterns in PARTS:
            if name in patterns:
                if (
                    part == "decode (orjson.loads)"
                    and name != names[-1]
                    and (names[names.index(name) + 1 :] != ["apply_each"])
                ):
                    break  # below the source step but not its decoding: bookkeeping
                return part
    if "run_once" in names or "Runtime.run" in names:
        return "start, join, stop"
    return "other"


def classify(raw: str) -> tuple[collections.Counter[str], int]:
    """Return the samples per part of py-spy's raw output (the main thread's during the
    timed run only, other threads' all), and how many were idle."""
    parts: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        _, *frames = stack.split(";")  # the first names the thread
        main_thread = not frames or not frames[0].startswith("Thread._bootstrap ")
        if main_thread and not any(f.startswith(TIMED) for f in frames):
            continue  # the interpreter's start-up, the imports: not timed
        if frames and _LINE.sub("", frames[-1]) in IDLE:
            idle += int(count)
            continue
        parts[part_of(frames)] += int(count)
    return parts, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=("W1", "W2"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=500, help="samples per second")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="save py-spy's samples here")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    root = Path(tempfile.mkdtemp(prefix="pipeline-parts-", dir=args.dir))
    try:
        data = root / "data"
        anyio.run(load, data, args.events, backend="trio")
        raw = root / "profile.txt"
        worker = subprocess.run(
            [spy, "record", "--nonblocking", "-r", str(args.rate), "-t", "-f", "raw",
             "-o", str(raw), "--", sys.executable, str(BENCH), "--worker", str(data),
             f"{args.workload.lower()}-parts", args.workload],
            check=True,
            capture_output=True,
            text=True,
        )  # fmt: skip
        figures = [line for line in worker.stdout.splitlines() if line.startswith("[")]
        timed = Timed(*orjson.loads(figures[-1]))
        parts, idle = classify(raw.read_text())
        if args.keep:
            shutil.copy(raw, args.keep)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    busy = sum(n for part, n in parts.items() if part != "start, join, stop")
    cpu_ns = timed.cpu_s * 1e9 / args.events
    print(
        f"{args.workload} under py-spy: {args.events:,} events in {timed.elapsed_s:.2f} s, "
        f"CPU {cpu_ns:,.0f} ns/event; {sum(parts.values()):,} busy samples, {idle:,} idle "
        f"left out; start-up, group join and stop: {parts['start, join, stop']:,} samples, "
        "spread over the parts below with the rest"
    )
    beyond = 0.0
    for label, plain in (("as in the plain loop", True), ("beyond the plain loop", False)):
        print(f"  {label}:")
        for part, _ in [*PARTS, ("other", ())]:
            if (part in PLAIN_PARTS) != plain or not parts[part]:
                continue
            ns = parts[part] / busy * cpu_ns
            beyond += 0 if plain else ns
            print(f"    {part:36} {ns:7,.0f} ns/event")
    print(f"  beyond the plain loop in all: {beyond:,.0f} ns/event")


if __name__ == "__main__":
    main()
