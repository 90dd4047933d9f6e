"""Independent scorer: every simulation figure recomputed from trace + models + events.

It shares nothing with the simulator's bookkeeping: it rebuilds each model's residency
intervals from the event list, checks that they are consistent (a load is ready exactly
``load_s`` after it starts, only a READY model is unloaded, every request that found its model
cold started a load at its own time), and derives waits, memory and budget violations from them.
Events are taken in the order given (they must be sorted by time; equal times keep their order).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.policy.types import MB_PER_GB, Event, Metrics, ModelProfile


class InconsistentEvents(ValueError):
    """The events cannot have come from a valid replay of the trace."""


@dataclass
class _Load:
    start: float
    ready: float | None = None
    unload: float | None = None


def recompute_from_events(trace: Sequence[tuple[float, str]],
                          models: Mapping[str, ModelProfile], events: Sequence[Event],
                          budget_mb: float) -> Metrics:
    loads = _residency(models, events)
    budget_violations = _budget_violations(models, events, budget_mb)
    end = trace[-1][0] if trace else 0.0
    gb_s = math.fsum(
        models[name].memory_mb / MB_PER_GB
        * max(0.0, min(load.unload if load.unload is not None else end, end) - load.start)
        for name, history in loads.items() for load in history)

    starts = {name: [load.start for load in history] for name, history in loads.items()}
    waits: list[float] = []
    for t, name in trace:
        if name not in models:
            raise InconsistentEvents(f"request at {t} for unknown model {name!r}")
        history = loads.get(name, [])
        k = bisect.bisect_right(starts.get(name, []), t) - 1
        load = history[k] if k >= 0 else None
        if load is None or (load.unload is not None and load.unload <= t):
            raise InconsistentEvents(f"request at {t} for {name!r} found it cold, but no load "
                                     "started then")
        ready = load.start + models[name].load_s if load.ready is None else load.ready
        waits.append(max(0.0, ready - t))

    n = len(waits)
    cold = sum(1 for w in waits if w > 0)
    return Metrics(requests=n, cold_starts=cold, cold_start_rate=cold / n if n else 0.0,
                   p99_wait_s=_nearest_rank(waits, 0.99),
                   mean_wait_s=math.fsum(waits) / n if n else 0.0,
                   memory_gb_s=gb_s, budget_violations=budget_violations)


def _residency(models: Mapping[str, ModelProfile],
               events: Sequence[Event]) -> dict[str, list[_Load]]:
    """Each model's loads, checked against the residency state machine."""
    loads: dict[str, list[_Load]] = {}
    previous = -math.inf
    for e in events:
        if e.time < previous:
            raise InconsistentEvents(f"event at {e.time} comes after one at {previous}")
        previous = e.time
        profile = models.get(e.model)
        if profile is None:
            raise InconsistentEvents(f"event for unknown model {e.model!r}")
        history = loads.setdefault(e.model, [])
        open_load = history[-1] if history and history[-1].unload is None else None
        if e.kind == "load_start":
            if open_load is not None:
                raise InconsistentEvents(f"{e.model!r} loaded at {e.time} while resident")
            history.append(_Load(e.time))
        elif e.kind == "ready":
            if open_load is None or open_load.ready is not None:
                raise InconsistentEvents(f"{e.model!r} ready at {e.time} without a load")
            expected = open_load.start + profile.load_s
            if not math.isclose(e.time, expected, rel_tol=1e-12, abs_tol=1e-9):
                raise InconsistentEvents(f"{e.model!r} ready at {e.time}, expected {expected}")
            open_load.ready = e.time
        else:
            if open_load is None or open_load.ready is None or open_load.ready > e.time:
                raise InconsistentEvents(f"{e.model!r} unloaded at {e.time} while not ready")
            if profile.pinned:
                raise InconsistentEvents(f"pinned {e.model!r} unloaded at {e.time}")
            open_load.unload = e.time
    return loads


def _budget_violations(models: Mapping[str, ModelProfile], events: Sequence[Event],
                       budget_mb: float) -> int:
    used = 0.0
    violations = 0
    for e in events:
        if e.kind == "load_start":
            used += models[e.model].memory_mb
            if used > budget_mb + 1e-6:
                violations += 1
        elif e.kind == "unload":
            used -= models[e.model].memory_mb
    return violations


def _nearest_rank(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
