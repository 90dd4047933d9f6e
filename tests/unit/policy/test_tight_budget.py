"""Admission and eviction under a budget that cannot hold everything asked for (issue 22), on
hand-made traces."""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Mapping

from controlplane.policy.planner import ForecastPlanner
from controlplane.policy.registry import make_policy
from controlplane.policy.simulator import DEFAULT_EPOCH_OFFSET_S, SimResult, simulate
from controlplane.policy.types import ClusterView, ModelProfile, Residency

from .helpers import poisson_times

GB = 1024.0
Trace = list[tuple[float, str]]


def run(name: str, trace: Trace, models: Mapping[str, ModelProfile], budget_mb: float,
        param: float) -> SimResult:
    policy = make_policy(name, models, param, epoch_offset_s=DEFAULT_EPOCH_OFFSET_S)
    return simulate(trace, models, budget_mb, policy, param=param)


def cold_starts(result: SimResult, trace: Trace, models: Mapping[str, ModelProfile],
                since: float = 0.0) -> Counter[str]:
    starts: dict[str, list[float]] = {}
    for e in result.events:
        if e.kind == "load_start":
            starts.setdefault(e.model, []).append(e.time)
    cold: Counter[str] = Counter()
    for t, m in trace:
        s = starts.get(m, [])
        k = bisect.bisect_right(s, t) - 1
        if t >= since and k >= 0 and t < s[k] + models[m].load_s:
            cold[m] += 1
    return cold


def one_offs(n: int, start: float, every_s: float, memory_mb: float,
             load_s: float) -> tuple[Trace, dict[str, ModelProfile]]:
    """``n`` models requested once each, one every ``every_s`` or so from ``start``."""
    rng = random.Random(3)
    trace = [(start + every_s * (i + rng.random() / 2), f"rare{i}") for i in range(n)]
    return trace, {f"rare{i}": ModelProfile(f"rare{i}", memory_mb, load_s) for i in range(n)}


def hot_set_and_one_offs() -> tuple[Trace, dict[str, ModelProfile]]:
    """Three busy models of 1 GB (a request every 15 s each, 8 s loads) and, from the second
    hour on, every 7 minutes or so two models of 1 GB requested 12 s apart, each only once."""
    models = {f"hot{i}": ModelProfile(f"hot{i}", GB, 8.0) for i in range(3)}
    end = 6 * 3600.0
    trace = [(t, f"hot{i}") for i in range(3) for t in poisson_times(1 / 15, 0.0, end, seed=i)]
    rare, rare_models = one_offs(40, 3600.0, 450.0, GB, 8.0)
    second = [(t + 12.0, f"{m}b") for t, m in rare]
    rare_models.update({f"{m}b": ModelProfile(f"{m}b", GB, 8.0) for _, m in rare})
    return sorted(trace + rare + second), {**models, **rare_models}


def test_one_off_requests_do_not_displace_a_hot_set_that_fits() -> None:
    trace, models = hot_set_and_one_offs()
    budget = 4 * GB  # the hot set, and room for one more
    ours = run("ours", trace, models, budget, 3000.0)
    hot = [f"hot{i}" for i in range(3)]
    after_warm_up = cold_starts(ours, trace, models, since=1800.0)
    assert sum(after_warm_up[h] for h in hot) == 0
    assert not [e for e in ours.events if e.model in hot and e.kind == "unload"]
    assert sum(after_warm_up.values()) == 80  # each one-off is cold, once
    # Recency lets the second of two one-offs push out the hot model used least recently.
    lru = run("lru", trace, models, budget, 1.0)
    assert sum(cold_starts(lru, trace, models, since=1800.0)[h] for h in hot) >= 5


def test_a_demand_load_evicts_a_guest_before_the_hot_set() -> None:
    models = {name: ModelProfile(name, GB, 8.0) for name in ("hot0", "hot1", "one", "two")}
    planner = ForecastPlanner(models, 3000.0)
    for i, t in enumerate(poisson_times(1 / 10, 0.0, 3600.0, seed=1)):
        planner.observe("hot0" if i % 2 else "hot1", t)
    planner.observe("one", 3599.0)  # a one-off, just served
    residency = {"hot0": Residency.READY, "hot1": Residency.READY, "one": Residency.READY}
    view = ClusterView(3600.0, 3 * GB, models, residency)
    planner.plan(view)
    planner.observe("two", 3600.0)
    unloads = planner.on_demand("two", view)
    # The hot models will be asked for within seconds, the one-off hardly: it goes, though
    # LRU would have taken the hot model used least recently.
    assert [a.model for a in unloads] == ["one"]
    assert "cold starts before it is back" in unloads[0].reason
    decisions = {d.model: d for d in planner.explain(view)}
    assert decisions["hot0"].decision == decisions["hot1"].decision == "keep"


def test_a_rare_model_turning_hot_becomes_resident_within_two_minutes_and_stays() -> None:
    # Budget for three 2 GB models and a fourth's demand load. Before the change: a (every
    # 10 s), b (20 s), c (30 s); then a goes quiet and "new", requested twice in four hours,
    # turns hot at 0.5 requests/s. One-off requests of other models come every 10 minutes.
    models = {n: ModelProfile(n, 2 * GB, 15.0) for n in ("a", "b", "c", "new")}
    change, end = 4 * 3600.0, 6 * 3600.0
    trace = [(t, "a") for t in poisson_times(1 / 10, 0.0, change, seed=1)]
    trace += [(t, "b") for t in poisson_times(1 / 20, 0.0, end, seed=2)]
    trace += [(t, "c") for t in poisson_times(1 / 30, 0.0, end, seed=3)]
    trace += [(3600.0, "new"), (9000.0, "new")]
    trace += [(t, "new") for t in poisson_times(0.5, change, end, seed=4)]
    rare, rare_models = one_offs(30, 1800.0, 600.0, 2 * GB, 15.0)
    trace = sorted(trace + rare)
    models.update(rare_models)
    result = run("ours", trace, models, 4 * 2 * GB, 3000.0)
    settled = change + 120.0
    assert cold_starts(result, trace, models, since=settled)["new"] == 0
    new_events = [(e.time, e.kind) for e in result.events if e.model == "new"]
    assert new_events[-1][1] == "ready" and new_events[-1][0] < settled
    # The model that went quiet left its room to the new one within minutes.
    a_last = [e for e in result.events if e.model == "a"][-1]
    assert a_last.kind == "unload" and a_last.time < change + 600.0
