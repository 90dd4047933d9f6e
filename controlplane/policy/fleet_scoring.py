"""Independent scorer of a fleet simulation: every figure recomputed from trace + models +
instance budgets + events, sharing nothing with the simulator's bookkeeping.

Each (model, instance) pair's events must follow the residency state machine (as in
:mod:`controlplane.policy.scoring`); a request is warm when some replica of its model is ready
at its time, else it waits for the earliest replica in progress, and a request that finds no
replica at all must have started one at its own time.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.policy.fleet_types import FleetEvent, FleetMetrics
from controlplane.policy.scoring import InconsistentEvents
from controlplane.policy.types import MB_PER_GB, Metrics, ModelProfile


@dataclass
class _Replica:
    start: float
    ready: float | None = None
    unload: float | None = None


def recompute_fleet(trace: Sequence[tuple[float, str]], models: Mapping[str, ModelProfile],
                    events: Sequence[FleetEvent], budgets: Mapping[str, float]) -> FleetMetrics:
    """``budgets``: instance -> budget_mb. Raises :class:`InconsistentEvents`."""
    history = _replicas(models, events, budgets)
    end = trace[-1][0] if trace else 0.0

    def held(r: _Replica) -> float:
        return max(0.0, min(r.unload if r.unload is not None else end, end) - r.start)

    gb_s = {name: math.fsum(models[m].memory_mb / MB_PER_GB * held(r)
                            for (m, i), rs in history.items() if i == name for r in rs)
            for name in budgets}
    replica_s: dict[str, list[float]] = defaultdict(list)
    for (m, _), rs in history.items():
        replica_s[m].extend(held(r) for r in rs)

    by_model: dict[str, list[tuple[list[float], list[_Replica]]]] = defaultdict(list)
    for (m, _), rs in history.items():
        by_model[m].append(([r.start for r in rs], rs))
    waits = [_wait(t, name, models, by_model) for t, name in trace]
    n = len(waits)
    cold = sum(1 for w in waits if w > 0)
    violations = _violations(models, events, budgets)
    most = _most_at_once(events)
    total = Metrics(requests=n, cold_starts=cold, cold_start_rate=cold / n if n else 0.0,
                    p99_wait_s=_nearest_rank(waits, 0.99),
                    mean_wait_s=math.fsum(waits) / n if n else 0.0,
                    memory_gb_s=math.fsum(gb_s.values()),
                    budget_violations=sum(violations.values()))
    return FleetMetrics(
        total=total, memory_gb_s=gb_s, budget_violations=violations,
        mean_replicas={m: (math.fsum(replica_s.get(m, [])) / end if end > 0 else 0.0)
                       for m in models},
        max_replicas={m: most.get(m, 0) for m in models})


def _wait(t: float, name: str, models: Mapping[str, ModelProfile],
          by_model: Mapping[str, list[tuple[list[float], list[_Replica]]]]) -> float:
    if name not in models:
        raise InconsistentEvents(f"request at {t} for unknown model {name!r}")
    waits = []
    for starts, rs in by_model.get(name, []):
        k = bisect.bisect_right(starts, t) - 1
        r = rs[k] if k >= 0 else None
        if r is None or (r.unload is not None and r.unload <= t):
            continue
        ready = r.ready if r.ready is not None else r.start + models[name].load_s
        waits.append(max(0.0, ready - t))
    if not waits:
        raise InconsistentEvents(f"request at {t} for {name!r} found no replica, but none "
                                 "started then")
    return min(waits)


def _replicas(models: Mapping[str, ModelProfile], events: Sequence[FleetEvent],
              budgets: Mapping[str, float]) -> dict[tuple[str, str], list[_Replica]]:
    out: dict[tuple[str, str], list[_Replica]] = {}
    previous = -math.inf
    for e in events:
        if e.time < previous:
            raise InconsistentEvents(f"event at {e.time} comes after one at {previous}")
        previous = e.time
        profile = models.get(e.model)
        if profile is None or e.instance not in budgets:
            raise InconsistentEvents(f"event for unknown model {e.model!r} or instance "
                                     f"{e.instance!r}")
        rs = out.setdefault((e.model, e.instance), [])
        open_r = rs[-1] if rs and rs[-1].unload is None else None
        where = f"{e.model!r} on {e.instance!r}"
        if e.kind == "load_start":
            if open_r is not None:
                raise InconsistentEvents(f"{where} loaded at {e.time} while resident")
            rs.append(_Replica(e.time))
        elif e.kind == "ready":
            if open_r is None or open_r.ready is not None:
                raise InconsistentEvents(f"{where} ready at {e.time} without a load")
            if not math.isclose(e.time, open_r.start + profile.load_s, rel_tol=1e-12,
                                abs_tol=1e-9):
                raise InconsistentEvents(f"{where} ready at {e.time}, not load_s after start")
            open_r.ready = e.time
        else:
            if open_r is None or open_r.ready is None or open_r.ready > e.time:
                raise InconsistentEvents(f"{where} unloaded at {e.time} while not ready")
            if profile.pinned:
                raise InconsistentEvents(f"pinned {where} unloaded at {e.time}")
            open_r.unload = e.time
    return out


def _violations(models: Mapping[str, ModelProfile], events: Sequence[FleetEvent],
                budgets: Mapping[str, float]) -> dict[str, int]:
    used = dict.fromkeys(budgets, 0.0)
    out = dict.fromkeys(budgets, 0)
    for e in events:
        if e.kind == "load_start":
            used[e.instance] += models[e.model].memory_mb
            if used[e.instance] > budgets[e.instance] + 1e-6:
                out[e.instance] += 1
        elif e.kind == "unload":
            used[e.instance] -= models[e.model].memory_mb
    return out


def _most_at_once(events: Sequence[FleetEvent]) -> dict[str, int]:
    """Most replicas per model resident at once, in event order (an unload listed before a
    load at the same time frees its place first)."""
    current: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    for e in events:
        if e.kind == "load_start":
            current[e.model] += 1
            most[e.model] = max(most[e.model], current[e.model])
        elif e.kind == "unload":
            current[e.model] -= 1
    return most


def _nearest_rank(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
