"""The process's metrics: one prometheus_client registry, off until a process turns it on.

Theory of operation. A process has at most one metrics registry (a prometheus_client
``CollectorRegistry``), made by :func:`enable_metrics` -- the CLI calls it for
``--metrics`` -- and dropped by :func:`disable_metrics`. Until then metrics cost nothing:
prometheus_client is not even imported (it takes a tenth of a second, which every short
``headwater`` command would pay).

Each package declares its metrics as a :class:`MetricSet`: a function that defines them
in a registry. :meth:`MetricSet.get` returns them, defined in the current registry the
first time it is asked, or ``None`` while metrics are off. A component takes what it
needs when it is made (so one made before :func:`enable_metrics` stays unmeasured) and
on its hot path tests ``is not None`` once per batch, never per record.

Two kinds of metric, by where the number comes from:

* events measured where they happen: latencies (an fsync, a request, a batch) observed
  into histograms by the code that timed them;
* state read at scrape time by a *collector* (an object with ``collect()``, registered
  in the registry): offsets, sizes, members, lag, and the counters components keep
  anyway as plain integers (``statistics()``), which therefore cost nothing more when
  metrics are on. A collector finds the live objects it reads in a :class:`Tracked`
  set, which holds them weakly: a closed store leaves the scrape with its last reference.

The registry is read by whoever serves ``/metrics``; collectors read objects of the event
loop that owns them, which are not thread-safe, so the server must call the registry from
that event loop's thread (``headwater.cli`` serves it from the same loop).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

T = TypeVar("T")
O = TypeVar("O")  # noqa: E741 - an object a collector reads


class _Process:
    """The process's registry, and a count of its changes (definitions follow them)."""

    registry: CollectorRegistry | None = None
    generation = 0


def enable_metrics() -> CollectorRegistry:
    """Turn metrics on for this process (once: later calls return the same registry).

    Components made from now on measure themselves into it; serve it with
    prometheus_client's exposition (``headwater ... --metrics HOST:PORT`` does).
    """
    if _Process.registry is None:
        # Costly, so imported on demand.
        from prometheus_client import CollectorRegistry, disable_created_metrics  # noqa: PLC0415

        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series: noise
        _Process.registry = CollectorRegistry()
        _Process.generation += 1
    return _Process.registry


def disable_metrics() -> None:
    """Turn metrics off: drop the registry; components made from now on measure nothing.

    For benchmarks and tests that compare a process with metrics and without.
    """
    if _Process.registry is not None:
        _Process.registry = None
        _Process.generation += 1


def metrics_registry() -> CollectorRegistry | None:
    """Return the process's registry, or ``None`` while metrics are off."""
    return _Process.registry


class MetricSet(Generic[T]):
    """A package's metric definitions, made in the process's registry on first use.

    :param define: makes the metrics in the registry it is given (and registers any
        collector there) and returns them, typically as a small frozen dataclass. It
        runs once per registry, so it may import prometheus_client.
    """

    def __init__(self, define: Callable[[CollectorRegistry], T]) -> None:
        self._define = define
        self._generation = -1
        self._value: T | None = None

    def get(self) -> T | None:
        """Return the metrics in the current registry, or ``None`` while metrics are off."""
        if self._generation != _Process.generation:
            registry = _Process.registry
            self._value = None if registry is None else self._define(registry)
            self._generation = _Process.generation
        return self._value


class Tracked(Generic[O]):
    """Live objects of one kind that a collector reads at scrape time (held weakly)."""

    def __init__(self) -> None:
        self._objects: weakref.WeakSet[O] = weakref.WeakSet()

    def add(self, obj: O) -> None:
        """Read ``obj`` at every scrape while it lives (or until :meth:`discard`)."""
        self._objects.add(obj)

    def discard(self, obj: O) -> None:
        """Stop reading ``obj``."""
        self._objects.discard(obj)

    def __iter__(self) -> Iterator[O]:
        return iter(list(self._objects))

    def __len__(self) -> int:
        return len(self._objects)
