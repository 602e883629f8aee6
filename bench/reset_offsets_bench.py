"""Measure ``headwater groups reset-offsets --execute`` on a topic of many partitions.

Run from the repository root::

    .venv/bin/python bench/reset_offsets_bench.py
    .venv/bin/python bench/reset_offsets_bench.py --baseline /path/to/old/.venv/bin/headwater

Creates a data directory with a topic of ``--partitions`` partitions (a few keyed records
in each), commits a group's offsets at the end of every partition, then times, round by
round, ``groups reset-offsets --to-earliest --execute`` (then puts the group back with
``--to-latest --execute``, untimed, so that every timed reset moves every partition). Each
is a whole command in a subprocess, as a person runs it: on a data directory it opens the
store, plans and commits. ``--target`` picks where: ``data`` (the directory, nobody
serving it), ``owner`` (the directory while a ``headwater broker`` owns and serves it) or
``bootstrap`` (that broker, by ``--bootstrap``). With ``--baseline EXE`` (another build's
``headwater`` console script), every round runs both builds, alternating which goes first,
and the ratio of the medians (current / baseline) is printed. Output goes to pipes: no
progress bar is drawn.

``--commits`` measures instead what batching costs a reset on a data directory, in one
process on one open store: the plan committed in one commit (as before batches) and in
batches of ``RESET_BATCH`` (as ``reset-offsets`` commits it now), interleaved, ``--rounds``
times each, and prints both medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

HEADWATER = str(Path(sys.executable).with_name("headwater"))
GROUP = "bench-group"
TOPIC = "wide"
_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class Target:
    """Where the commands work: ``--data DIR`` before the command, or ``--bootstrap``
    after it."""

    def __init__(self, data: Path, bootstrap: str | None) -> None:
        self.data = data
        self.bootstrap = bootstrap

    def run(self, exe: str, *args: str, stdin: str | None = None) -> float:
        """Run ``exe ARGS`` here; return its wall time in seconds (it must succeed)."""
        if self.bootstrap is None:
            argv = [exe, "--data", str(self.data), *args]
        else:
            argv = [exe, *args, "--bootstrap", self.bootstrap]
        started = time.perf_counter()
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr}")
        return elapsed


@contextmanager
def broker(data: Path) -> Iterator[str]:
    """A ``headwater broker`` owning ``data``; yields its address."""
    proc = subprocess.Popen(
        [HEADWATER, "broker", "--data", str(data), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen = b""
    try:
        while (found := _LISTENING.search(seen)) is None:
            if not select.select([proc.stderr], [], [], 120)[0]:
                raise SystemExit(f"the broker did not listen: {seen!r}")
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                raise SystemExit(f"the broker exited: {seen!r}")
            seen += chunk
        yield f"127.0.0.1:{found[1].decode()}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


def reset(target: Target, exe: str, to: str) -> float:
    """Time one ``groups reset-offsets ... --execute``."""
    return target.run(exe, "groups", "reset-offsets", GROUP, "-t", TOPIC, to, "--execute")


def measure(target: Target, builds: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """Time the builds' resets, interleaved, alternating which goes first."""
    times: dict[str, list[float]] = {name: [] for name in builds}
    for i in range(rounds):
        order = list(builds.items())
        if i % 2:
            order.reverse()
        for name, exe in order:
            times[name].append(reset(target, exe, "--to-earliest"))
            reset(target, exe, "--to-latest")
    return times


def measure_commits(data: Path, rounds: int) -> dict[str, list[float]]:
    """Time one commit of the whole plan against commits of batches, interleaved."""
    from headwater.cli._offset_reset import commit_in_batches  # noqa: PLC0415
    from headwater.groups import GroupCoordinator  # noqa: PLC0415
    from headwater.store import open_store  # noqa: PLC0415

    times: dict[str, list[float]] = {"one commit": [], "batches": []}

    async def main() -> None:
        async with open_store(data) as store, GroupCoordinator(store) as coordinator:
            plans = [
                list(coordinator.plan_offset_reset(GROUP, TOPIC, to).items())
                for to in ("earliest", "latest")
            ]

            async def whole(plan: list[Any]) -> None:
                await coordinator.commit(GROUP, dict(plan))

            async def batched(plan: list[Any]) -> None:
                async def commit(batch: Sequence[Any]) -> None:
                    await coordinator.commit(GROUP, dict(batch))

                await commit_in_batches(plan, commit, None)

            ways = [("one commit", whole), ("batches", batched)]
            for i in range(rounds):
                for name, way in ways if i % 2 else ways[::-1]:
                    for plan in plans:  # every commit moves every partition
                        started = time.perf_counter()
                        await way(plan)
                        times[name].append(time.perf_counter() - started)

    anyio.run(main, backend="trio")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", metavar="EXE", help="another build's headwater")
    parser.add_argument("--target", choices=["data", "owner", "bootstrap"], default="data")
    parser.add_argument("--commits", action="store_true", help="time the commits alone")
    args = parser.parse_args()
    builds = {"current": HEADWATER}
    if args.baseline:
        builds["baseline"] = args.baseline
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        local = Target(data, None)
        local.run(HEADWATER, "topics", "create", TOPIC, "--partitions", str(args.partitions))
        keyed = "".join(f'{{"k": "key-{i}"}}\n' for i in range(args.partitions * 4))
        local.run(HEADWATER, "produce", TOPIC, "--key", "k", "--quiet", stdin=keyed)
        reset(local, HEADWATER, "--to-latest")
        if args.commits:
            times = measure_commits(data, args.rounds)
            print(f"committing a reset of {args.partitions} partitions, in process:")
            for name, got in times.items():
                print(f"  {name:10} median {statistics.median(got) * 1000:.1f} ms")
            ratio = statistics.median(times["batches"]) / statistics.median(times["one commit"])
            print(f"  batches / one commit: {ratio:.3f}")
            return
        if args.target == "data":
            times = measure(local, builds, args.rounds)
        else:
            with broker(data) as address:
                served = Target(data, address if args.target == "bootstrap" else None)
                times = measure(served, builds, args.rounds)
    print(f"groups reset-offsets --execute, {args.partitions} partitions, {args.target}:")
    for name, got in times.items():
        rounds = " ".join(f"{t:.3f}" for t in got)
        print(f"  {name:9} median {statistics.median(got):.3f} s  ({rounds})")
    if "baseline" in times:
        ratio = statistics.median(times["current"]) / statistics.median(times["baseline"])
        print(f"  current / baseline: {ratio:.3f}")


if __name__ == "__main__":
    main()
