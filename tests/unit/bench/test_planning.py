"""bench/planning.py and the shortcuts that make a planning pass fast at 10,000 models: each
gives exactly what the straightforward computation gives, on seeded random fleets."""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pytest

from bench.planning import (
    Fleet,
    build,
    instances_for,
    memory_growth,
    planning_pass,
    request,
    targets,
    workload,
)
from controlplane.policy.decay import DecayedBins
from controlplane.policy.forecast import ModelForecast
from controlplane.policy.idle import IDLE_EDGES, IdleTimes, _bin_hi, idle_bin
from controlplane.policy.planner import ForecastPlanner
from controlplane.policy.replicas import (
    InstanceCapacity,
    Replica,
    ReplicaDemand,
    ReplicaOptions,
    ReplicaPlan,
    _free_text,
    _reason,
    _short_reason,
    _target,
    _validate,
    plan_replicas,
)
from controlplane.policy.types import Residency


def _run(shortcuts: bool, n_models: int, seed: int) -> list[tuple[Any, ...]]:
    """Every pass's actions, decisions and replica plan over a replayed stretch of traffic."""
    trace, models = workload(n_models, seed)
    split = trace[-1][0] - 600.0
    history = [row for row in trace if row[0] <= split]
    live = [row for row in trace if row[0] > split]
    policy, fleet = build(models, history, instances_for(models, 7))
    policy.shortcuts = shortcuts
    out: list[tuple[Any, ...]] = []
    now, k = split, 0
    for i in range(64):  # two full scans (every 5 minutes) and the passes between
        if i >= 3:
            while k < len(live) and live[k][0] <= now + 10.0:
                request(policy, fleet, live[k][1], live[k][0])
                k += 1
            now += 10.0
        actions, decisions, plan = planning_pass(policy, fleet, now)
        out.append((now, actions, decisions, dict(plan.replicas), dict(plan.unplaced),
                    policy.next_wakeup(now)))
    return out


@pytest.mark.parametrize("seed", [3, 11])
def test_the_shortcuts_give_the_plans_of_the_plain_path(seed: int) -> None:
    fast = _run(True, 400, seed)
    plain = _run(False, 400, seed)
    assert fast == plain
    assert any(step[1] for step in fast)  # the passes did load and unload models


def test_survival_is_the_decayed_fraction_at_any_time_and_kept_until_the_bins_change() -> None:
    rng = random.Random(5)
    for _ in range(50):
        idle = IdleTimes(86400.0)
        t = 0.0
        for _ in range(rng.randint(0, 80)):
            gap = rng.choice([0.2, 3.0, 40.0, 700.0, 9000.0]) * rng.uniform(0.5, 2.0)
            t += gap
            idle.add(gap, t)
            probe = rng.choice([0.01, 1.0, 600.0, 1e5, 1e7])
            # read after every addition: a kept value must not outlive a change of the bins
            assert idle.survival(probe, t) == _plain_survival(idle._bins, probe, t, scaled=False)
        now = t + rng.uniform(0, 2e5)
        for probe in (0.01, 1.0, 600.0, 1e5, 1e7):
            found = idle.survival(probe, now)
            # over every stored weight, exactly; and the fraction of the decayed weights at
            # ``now`` (decay scales all alike) up to rounding
            assert found == _plain_survival(idle._bins, probe, now, scaled=False)
            assert math.isclose(found, _plain_survival(idle._bins, probe, now, scaled=True),
                                rel_tol=1e-12, abs_tol=1e-15)
            assert idle.survival(probe, now + 5e5) == found


def _plain_survival(bins: DecayedBins, idle_s: float, now: float, *, scaled: bool) -> float:
    weights = bins.values(now) if scaled else list(bins.raw())
    total = math.fsum(weights)
    if total <= 0:
        return 1.0
    k = idle_bin(idle_s)
    lo, hi = IDLE_EDGES[k], _bin_hi(k)
    inside = weights[k] * ((hi - idle_s) / (hi - lo) if math.isfinite(hi) else 1.0)
    return min(1.0, (inside + math.fsum(weights[k + 1:])) / total)


def test_daily_figures_are_the_separate_reads() -> None:
    fc = ModelForecast(follow_window_s=5.0)
    assert fc.daily(10.0) == (0.0, 0.0)
    for t in (0.0, 1.0, 2.5, 900.0, 901.0, 5000.0):
        fc.observe(t)
    for now in (5001.0, 9000.0, 90000.0):
        assert fc.daily(now) == (fc.requests_per_day(now), fc.cold_starts_per_day_if_lazy(now))


@pytest.mark.parametrize("seed", range(6))
def test_plan_replicas_is_the_plain_placement(seed: int) -> None:
    rng = random.Random(seed)
    instances = [InstanceCapacity(f"i{k}", rng.choice([500.0, 2000.0, 8000.0, math.inf]),
                                  accepting=rng.random() > 0.1) for k in range(8)]
    names = [i.name for i in instances]
    demands = [ReplicaDemand(f"m{k:03d}", rng.uniform(10, 3000), rng.choice([0.0, 0.5, 12.0])
                             * rng.random(), wanted=rng.random() < 0.4,
                             pinned=rng.random() < 0.05,
                             max_replicas=rng.choice([None, None, 1]))
               for k in range(200)]
    current = {d.model: rng.sample(names, rng.randint(0, 3)) for d in demands
               if rng.random() < 0.3}
    options = ReplicaOptions(rate_per_replica=2.0, max_replicas=rng.choice([0, 3]))
    fast = plan_replicas(demands, instances, current, options)
    plain = _plain_plan(demands, instances, current, options)
    assert fast == plain
    assert list(fast.replicas.items()) == list(plain.replicas.items())
    assert any(fast.replicas.values())


def _plain_plan(demands: Sequence[ReplicaDemand], instances: Sequence[InstanceCapacity],
                current: Mapping[str, Collection[str]], options: ReplicaOptions) -> ReplicaPlan:
    """plan_replicas as it was written before the shortcuts (every model placed in full)."""
    _validate(demands, instances, options)
    accepting = [i for i in instances if i.accepting]
    order = sorted(demands, key=lambda d: (not d.pinned, -d.rate_per_s, d.model))
    targets = {d.model: _target(d, len(instances), options) for d in order}
    budget = {i.name: i.budget_mb for i in accepting}
    rank = {i.name: k for k, i in enumerate(instances)}
    used = dict.fromkeys(budget, 0.0)
    sticky = {d.model: sorted((name for name in set(current.get(d.model, ())) if name in budget),
                              key=rank.__getitem__) for d in order}
    reserved = dict.fromkeys(budget, 0.0)
    for d in order:
        for name in sticky[d.model][:targets[d.model]]:
            reserved[name] += d.memory_mb
    replicas: dict[str, tuple[Replica, ...]] = {}
    unplaced: dict[str, str] = {}
    for d in order:
        target = targets[d.model]
        for name in sticky[d.model][:target]:
            reserved[name] -= d.memory_mb
        reason = _reason(d, target, options)
        placed: list[Replica] = []
        for name in sticky[d.model]:
            if len(placed) < target and used[name] + d.memory_mb <= budget[name] + 1e-6:
                used[name] += d.memory_mb
                placed.append(Replica(name, f"{reason}; kept"))
        while len(placed) < target:
            taken = {r.instance for r in placed}
            fits = [n for n in budget
                    if n not in taken and used[n] + d.memory_mb <= budget[n] + 1e-6]
            if not fits:
                break
            free_of_others = [n for n in fits
                              if used[n] + reserved[n] + d.memory_mb <= budget[n] + 1e-6]
            pool = free_of_others or fits
            extra = reserved if free_of_others else dict.fromkeys(budget, 0.0)
            best = min(pool, key=lambda n: (-(budget[n] - used[n] - extra[n]), used[n], rank[n]))
            free = budget[best] - used[best] - extra[best]
            used[best] += d.memory_mb
            placed.append(Replica(best, f"{reason}; {_free_text(free)}"))
        replicas[d.model] = tuple(placed)
        if len(placed) < target:
            unplaced[d.model] = _short_reason(d, target, placed, accepting, budget, used)
    return ReplicaPlan(replicas, unplaced, targets)


def test_a_small_pass_and_the_targets() -> None:
    trace, models = workload(200, 1)
    policy, fleet = build(models, trace, instances_for(models, 5))
    assert isinstance(policy, ForecastPlanner) and isinstance(fleet, Fleet)
    actions, decisions, plan = planning_pass(policy, fleet, trace[-1][0] + 1.0)
    assert len(decisions) == 200
    # the plan holds the models with replicas to place or trim: wanted or resident
    wanted = {d.model for d in decisions if d.decision in ("pinned", "keep")}
    resident = {m for m, s in fleet.residency.items() if s is not Residency.COLD}
    assert set(plan.replicas) == wanted | resident and resident
    assert all(plan.replicas[m] for m in wanted)
    assert all(fleet.residency.get(a.model) is not None for a in actions if a.kind == "load")
    growth = memory_growth(n_models=20, light=5, heavy=200)
    assert growth["heavy_bytes_per_model"] < 1.5 * growth["light_bytes_per_model"]
    sizes = {10_000: {"pass_cpu_ms": {"max": 150.0}, "memory_bytes_per_model": 9000}}
    assert targets(sizes, {"light_bytes_per_model": 9000, "heavy_bytes_per_model": 9100}) == {
        "10k_models_pass_cpu_le_200ms": True, "memory_per_model_bounded": True}
