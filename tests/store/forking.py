"""Forking a child of the test process, safely for what the process already holds.

The crash tests fork the pytest process itself, which may already have run tests that
leave threads behind: librdkafka's clients, for one, whose handles join their threads
when they are freed. A forked child has none of its parent's threads, so a collection in
the child that frees such a handle crashes it. :func:`fork` collects the parent's garbage
first (freed there, where the threads exist) and freezes, in the child, every object it
inherited, so that the child's collections only ever look at what the child made.
"""

from __future__ import annotations

import gc
import os


def fork() -> int:
    """``os.fork()``, after collecting the parent's garbage; the child's collector ignores
    every object inherited from the parent. Returns 0 in the child, its pid in the parent."""
    gc.collect()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        gc.freeze()
    return pid
