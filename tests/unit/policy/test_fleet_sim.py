from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import pytest

from controlplane.policy.cli import add_simulate_parser
from controlplane.policy.fleet_scoring import recompute_fleet
from controlplane.policy.fleet_sim import FleetResult, instance_names, simulate_fleet
from controlplane.policy.fleet_types import FleetEvent
from controlplane.policy.registry import POLICY_NAMES, make_policy
from controlplane.policy.replicas import InstanceCapacity, ReplicaOptions
from controlplane.policy.scoring import InconsistentEvents
from controlplane.policy.simulator import DEFAULT_EPOCH_OFFSET_S, simulate
from controlplane.policy.types import Action, ClusterView, Metrics, ModelProfile, Residency

Trace = list[tuple[float, str]]
HOT = ModelProfile("hot", 100.0, 1.0)
PIN = ModelProfile("pin", 50.0, 1.0, pinned=True)
BIG = ModelProfile("big", 300.0, 2.0)


@pytest.fixture(scope="module")
def trace_2h(bench_traces: ModuleType) -> tuple[Trace, dict[str, ModelProfile]]:
    shape = bench_traces.TraceShape("fleet", seed=11, n_models=10, hours=2,
                                    requests_per_hour=600.0, pinned=1)
    trace, models, _ = bench_traces.generate(shape)
    return trace, models


def fleet(n: int, budget_mb: float) -> list[InstanceCapacity]:
    return [InstanceCapacity(name, budget_mb) for name in instance_names(n)]


def run(name: str, trace: Trace, models: Mapping[str, ModelProfile],
        instances: list[InstanceCapacity], options: ReplicaOptions) -> FleetResult:
    policy = make_policy(name, models, None, trace=trace if name == "oracle" else None,
                         epoch_offset_s=DEFAULT_EPOCH_OFFSET_S)
    return simulate_fleet(trace, models, instances, policy, options=options)


def assert_same_figures(a: Metrics, b: Metrics) -> None:
    assert (a.requests, a.cold_starts, a.budget_violations) == (
        b.requests, b.cold_starts, b.budget_violations)
    assert a.cold_start_rate == pytest.approx(b.cold_start_rate, rel=1e-12)
    assert a.memory_gb_s == pytest.approx(b.memory_gb_s, rel=1e-9)
    assert a.mean_wait_s == pytest.approx(b.mean_wait_s, rel=1e-9)
    assert a.p99_wait_s == pytest.approx(b.p99_wait_s, rel=1e-9)


@pytest.mark.parametrize("n", [1, 3])
def test_figures_match_the_independent_scorer(
        trace_2h: tuple[Trace, dict[str, ModelProfile]], n: int) -> None:
    trace, models = trace_2h
    instances = fleet(n, 0.6 * sum(p.memory_mb for p in models.values()) / n)
    budgets = {i.name: i.budget_mb for i in instances}
    # A low rate per replica, so hot models get several replicas on three instances.
    options = ReplicaOptions(rate_per_replica=0.02)
    several = 0
    for name in POLICY_NAMES:
        result = run(name, trace, models, instances, options)
        scored = recompute_fleet(trace, models, result.events, budgets)
        assert_same_figures(scored.total, result.metrics.total)
        assert scored.budget_violations == result.metrics.budget_violations, name
        assert scored.max_replicas == result.metrics.max_replicas, name
        for instance, gb_s in scored.memory_gb_s.items():
            assert gb_s == pytest.approx(result.metrics.memory_gb_s[instance], rel=1e-9)
        for model, mean in scored.mean_replicas.items():
            assert mean == pytest.approx(result.metrics.mean_replicas[model], rel=1e-9)
        assert {e.instance for e in result.events} <= set(budgets)
        several += sum(1 for k in result.metrics.max_replicas.values() if k > 1)
    assert (several > 0) == (n > 1)


def test_one_instance_matches_the_single_instance_simulator(
        trace_2h: tuple[Trace, dict[str, ModelProfile]]) -> None:
    trace, models = trace_2h
    budget = 0.5 * sum(p.memory_mb for p in models.values())
    for name in POLICY_NAMES:
        fleet_result = run(name, trace, models, fleet(1, budget), ReplicaOptions())
        policy = make_policy(name, models, None, trace=trace if name == "oracle" else None,
                             epoch_offset_s=DEFAULT_EPOCH_OFFSET_S)
        single = simulate(trace, models, budget, policy)
        assert_same_figures(fleet_result.metrics.total, single.metrics)
        assert sorted((e.time, e.model, e.kind) for e in fleet_result.events) == sorted(
            (e.time, e.model, e.kind) for e in single.events), name


def test_hot_model_gains_a_replica_and_requests_are_warm_on_either() -> None:
    models = {p.name: p for p in (HOT, PIN)}
    trace = [(float(t), "hot") for t in range(1, 11)] + [(12.0, "hot")]
    # keep-alive has no forecast: the rate is the last hour's requests (9 by t=10: 3 wanted
    # at 0.001 req/s each, capped at one per instance).
    result = run("keepalive_10m", trace, models, fleet(2, 200.0),
                 ReplicaOptions(rate_per_replica=0.001))
    rows = [(e.time, e.model, e.kind, e.instance) for e in result.events]
    # hot's first load goes where most budget is free; second replicas (pin's too) are added
    # beside a ready one at the next placement (t=10), where each fits.
    assert rows == [(0.0, "pin", "load_start", "i1"), (1.0, "pin", "ready", "i1"),
                    (1.0, "hot", "load_start", "i2"), (2.0, "hot", "ready", "i2"),
                    (10.0, "pin", "load_start", "i2"), (10.0, "hot", "load_start", "i1"),
                    (11.0, "pin", "ready", "i2"), (11.0, "hot", "ready", "i1")]
    m = result.metrics
    assert (m.total.requests, m.total.cold_starts, m.total.budget_violations) == (11, 1, 0)
    assert m.max_replicas == {"hot": 2, "pin": 2}
    assert m.memory_gb_s["i1"] == pytest.approx((50.0 * 12 + 100.0 * 2) / 1024)
    assert m.mean_replicas["hot"] == pytest.approx((11.0 + 2.0) / 12.0)


def test_a_policy_unload_takes_every_replica_a_loading_one_once_ready() -> None:
    slow = ModelProfile("slow", 100.0, 5.0)

    seen: dict[float, Residency] = {}

    class UnloadAt12:
        name = "scripted"

        def observe(self, model: str, t: float) -> None:
            pass

        def on_demand(self, model: str, view: ClusterView) -> list[Action]:
            return []

        def plan(self, view: ClusterView) -> list[Action]:
            seen[view.now] = view.state("slow")
            return [Action("unload", "slow", "go")] if view.now == 12.0 else []

        def next_wakeup(self, now: float) -> float | None:
            return 13.0 if 12.0 <= now < 13.0 else None

    trace = [(float(t), "slow") for t in range(1, 10)] + [(16.0, "slow")]
    result = simulate_fleet(trace, {"slow": slow}, fleet(2, 500.0), UnloadAt12(),
                            options=ReplicaOptions(rate_per_replica=0.0021), plan_period_s=3.0)
    rows = [(e.time, e.kind, e.instance) for e in result.events]
    assert rows == [(1.0, "load_start", "i1"), (6.0, "ready", "i1"),
                    (9.0, "load_start", "i2"),  # a second replica: 8 requests in the hour
                    (12.0, "unload", "i1"),  # the placement right after does not keep i2
                    (14.0, "ready", "i2"), (14.0, "unload", "i2"),
                    (16.0, "load_start", "i1"), (21.0, "ready", "i1")]
    # to the policy the model is gone once it unloaded it, while i2 still loads
    assert (seen[12.0], seen[13.0]) == (Residency.READY, Residency.COLD)
    scored = recompute_fleet(trace, {"slow": slow}, result.events, {"i1": 500.0, "i2": 500.0})
    assert_same_figures(scored.total, result.metrics.total)


def test_a_model_larger_than_any_instance_still_loads_and_counts_a_violation() -> None:
    models = {p.name: p for p in (HOT, BIG)}
    trace = [(1.0, "hot"), (5.0, "big"), (6.0, "big")]
    result = run("keepalive_10m", trace, models, fleet(2, 250.0), ReplicaOptions())
    big = [(e.time, e.kind, e.instance) for e in result.events if e.model == "big"]
    assert big[0] == (5.0, "load_start", "i2")  # the instance with most free budget
    assert result.metrics.budget_violations == {"i1": 0, "i2": 1}
    assert result.metrics.total.cold_starts == 3  # hot at 1, big at 5 and 6 (still loading)


def test_scorer_rejects_events_that_cannot_be_a_fleet_replay() -> None:
    models = {"hot": HOT}
    budgets = {"i1": 500.0}
    with pytest.raises(InconsistentEvents, match="found no replica"):
        recompute_fleet([(1.0, "hot")], models, [], budgets)
    with pytest.raises(InconsistentEvents, match="unknown model"):
        recompute_fleet([(1.0, "hot")], models, [FleetEvent(1.0, "hot", "load_start", "x")],
                        budgets)
    with pytest.raises(InconsistentEvents, match="while resident"):
        recompute_fleet([(1.0, "hot")], models, [FleetEvent(1.0, "hot", "load_start", "i1"),
                                                 FleetEvent(1.0, "hot", "load_start", "i1")],
                        budgets)


def test_cli_fleet_json_and_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    models = tmp_path / "models.csv"
    models.write_text("model,memory_mb,load_s,pinned\na,100,2,false\np,50,1,true\n")
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,model\n" + "".join(f"{t},a\n" for t in range(1, 40)))
    events = tmp_path / "events.csv"
    p = argparse.ArgumentParser(prog="warmctl")
    add_simulate_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["simulate", "--trace", str(trace), "--models", str(models),
                         "--budget-mb", "400", "--policy", "lru", "--instances", "3",
                         "--replica-rate", "0.001", "--events-out", str(events), "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["instances"], out["budget_mb_per_instance"]) == (3, 400)
    (result,) = out["results"]
    assert set(result["instances"]) == {"i1", "i2", "i3"}
    assert result["replicas"]["p"]["max"] == 2
    assert result["replicas"]["a"]["max"] == 3
    assert result["cold_starts"] == 2  # a at 1 (load) and 2 (still loading)
    with events.open() as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) == {"time", "model", "event", "instance"}
    assert {r["instance"] for r in rows} == {"i1", "i2", "i3"}
    bad = p.parse_args(["simulate", "--trace", str(trace), "--models", str(models),
                        "--budget-mb", "400", "--instances", "0"])
    assert bad.func(bad) == 2
    assert "--instances must be at least 1" in capsys.readouterr().err
