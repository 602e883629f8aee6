"""Power-loss soak: thousands of simulated power cuts, and how many acknowledged records they lost.

Runs the crash cycles of ``tests/store/test_power_loss.py`` (one partition log: appends
acknowledged one by one and in groups, rolls, retention, compaction, index and checkpoint
writes, clean closes and kills) and of ``tests/store/test_power_loss_store.py`` (the
store's async face: ``always`` and ``batch`` topics with concurrent writers, a compacted
topic) under the FaultFS power-loss simulator, with seeds other than the test suite's,
and prints the figures. Every cycle ends in a simulated power cut followed by a reopen
that checks every acknowledged record. Stops at the first failure, printing the seed
and cycle that replay it.

Usage, from the repository root::

    .venv/bin/python bench/power_loss_soak.py [--log-cycles 3000] [--store-cycles 1000] [--seed N]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "store"))

import test_power_loss as log_cycles
import test_power_loss_store as store_cycles

CYCLES_PER_RUN = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-cycles", type=int, default=3000)
    parser.add_argument("--store-cycles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7_000_000)
    args = parser.parse_args()
    # Recovery logs every torn tail it cuts: thousands of them here, all expected.
    logging.getLogger("headwater.store").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="hw-power-loss-"))
    started = time.perf_counter()
    try:
        losses = acked = lost = 0
        for run in range(args.log_cycles // CYCLES_PER_RUN):
            seed = args.seed + run
            folder = root / f"log-{run}"
            folder.mkdir()
            history = log_cycles.run_cycles(folder, CYCLES_PER_RUN, seed)
            shutil.rmtree(folder)
            losses += history.power_losses
            acked += history.acked_end
            lost += len(history.lost)
        print(
            f"partition log: {losses:,} simulated power losses, {acked:,} records"
            f" acknowledged, {lost} acknowledged records lost"
        )
        losses = acked = lost = 0
        for run in range(args.store_cycles // CYCLES_PER_RUN):
            seed = args.seed + 1000 + run
            folder = root / f"store-{run}"
            folder.mkdir()
            ledger = anyio.run(
                store_cycles.run_cycles, folder, CYCLES_PER_RUN, seed, backend="trio"
            )
            shutil.rmtree(folder)
            losses += ledger.power_losses
            acked += sum(len(v) for v in ledger.acked.values())
            lost += len(ledger.lost)
        print(
            f"store (always, batch, compacted): {losses:,} simulated power losses, {acked:,}"
            f" records acknowledged, {lost} acknowledged records lost"
        )
        print(f"{time.perf_counter() - started:,.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
