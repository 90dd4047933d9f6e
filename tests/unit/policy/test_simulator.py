from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from controlplane.policy.baselines import KeepAlive, Lru
from controlplane.policy.registry import POLICY_NAMES, make_policy
from controlplane.policy.scoring import InconsistentEvents, recompute_from_events
from controlplane.policy.simulator import DEFAULT_EPOCH_OFFSET_S, SimResult, simulate
from controlplane.policy.trace_io import (
    TraceFormatError,
    read_events,
    read_models,
    read_trace,
    write_events,
    write_models,
    write_trace,
)
from controlplane.policy.types import Action, ClusterView, Event, ModelProfile

A = ModelProfile("a", 1024.0, 2.0)
B = ModelProfile("b", 600.0, 5.0)
C = ModelProfile("c", 600.0, 1.0)


def models_of(*profiles: ModelProfile) -> dict[str, ModelProfile]:
    return {p.name: p for p in profiles}


def run(name: str, trace: list[tuple[float, str]], models: Mapping[str, ModelProfile],
        budget_mb: float, param: float | None = None) -> SimResult:
    policy = make_policy(name, models, param, trace=trace if name == "oracle" else None,
                         epoch_offset_s=DEFAULT_EPOCH_OFFSET_S)
    return simulate(trace, models, budget_mb, policy, param=param)


def kinds(result: SimResult) -> list[tuple[float, str, str]]:
    return [(e.time, e.model, e.kind) for e in result.events]


def test_lru_tiny_trace_hand_computed() -> None:
    trace = [(0.5, "a"), (1.0, "a"), (3.0, "a"), (10.0, "a")]
    result = run("lru", trace, models_of(A), budget_mb=2000)
    assert kinds(result) == [(0.5, "a", "load_start"), (2.5, "a", "ready")]
    m = result.metrics
    assert (m.requests, m.cold_starts, m.budget_violations) == (4, 2, 0)
    assert m.cold_start_rate == 0.5
    assert m.p99_wait_s == 2.0  # nearest rank: the 4th of [0, 0, 1.5, 2.0]
    assert m.mean_wait_s == pytest.approx((2.0 + 1.5) / 4)
    assert m.memory_gb_s == pytest.approx(1.0 * (10.0 - 0.5))


def test_keepalive_tiny_trace_hand_computed() -> None:
    # Ready at 2; used at 4; dropped at 9; cold again at 12; a request exactly at the ready
    # time (14) is warm.
    trace = [(0.0, "a"), (4.0, "a"), (12.0, "a"), (14.0, "a")]
    result = run("keepalive_10m", trace, models_of(A), budget_mb=2000, param=5.0)
    assert kinds(result) == [(0.0, "a", "load_start"), (2.0, "a", "ready"), (9.0, "a", "unload"),
                             (12.0, "a", "load_start"), (14.0, "a", "ready")]
    m = result.metrics
    assert (m.cold_starts, m.p99_wait_s, m.mean_wait_s) == (2, 2.0, 1.0)
    assert m.memory_gb_s == pytest.approx(9.0 + 2.0)


def test_demand_load_that_cannot_fit_is_a_budget_violation() -> None:
    # b is still loading when c is requested: nothing can be unloaded, c loads anyway.
    trace = [(0.0, "b"), (1.0, "c"), (10.0, "b")]
    result = run("lru", trace, models_of(B, C), budget_mb=1000)
    m = result.metrics
    assert m.budget_violations == 1
    assert m.cold_starts == 2
    assert m.memory_gb_s == pytest.approx(600 / 1024 * (10.0 + 9.0))


def test_lru_evicts_the_least_recently_used() -> None:
    trace = [(0.0, "b"), (6.0, "c"), (8.0, "b"), (9.0, "a")]
    result = run("lru", trace, models_of(A, B, C), budget_mb=1700)
    # a (1024) needs room next to b and c (1200): c was used before b, so c goes.
    assert (9.0, "c", "unload") in kinds(result)
    assert (9.0, "b", "unload") not in kinds(result)
    assert result.metrics.budget_violations == 0


def test_ties_unloads_before_loads_and_requests_after_events() -> None:
    class SwapAt10:
        name = "swap"

        def observe(self, model: str, t: float) -> None:
            pass

        def on_demand(self, model: str, view: ClusterView) -> list[Action]:
            return []

        def plan(self, view: ClusterView) -> list[Action]:
            if view.now == 10.0:
                return [Action("load", "c", "x"), Action("unload", "b", "y")]
            return []

        def next_wakeup(self, now: float) -> float | None:
            return None

    # c is requested first, so the plan at 10 may load it again (a plan loads only models
    # with a request). b's demand load at 5 does not fit next to c: the harness evicts c.
    trace = [(0.0, "c"), (5.0, "b"), (10.0, "b"), (10.0, "c"), (11.0, "c")]
    result = simulate(trace, models_of(B, C), 1000.0, SwapAt10())
    assert kinds(result)[2:4] == [(5.0, "c", "unload"), (5.0, "b", "load_start")]
    assert kinds(result)[4:8] == [(10.0, "b", "ready"), (10.0, "b", "unload"),
                                  (10.0, "c", "load_start"), (10.0, "b", "load_start")]
    # The request for b at 10 came after the unload: cold again, and its demand load does not
    # fit next to c, which is loading. The one for c at 10 found c loading; at 11, ready.
    assert result.metrics.budget_violations == 1
    assert result.metrics.cold_starts == 4


def test_a_plan_loads_only_models_with_a_request() -> None:
    class PreloadEverything:
        name = "eager"

        def observe(self, model: str, t: float) -> None:
            pass

        def on_demand(self, model: str, view: ClusterView) -> list[Action]:
            return []

        def plan(self, view: ClusterView) -> list[Action]:
            return [Action("load", name, "x") for name in sorted(view.models)]

        def next_wakeup(self, now: float) -> float | None:
            return None

    trace = [(0.0, "a"), (30.0, "c")]
    result = simulate(trace, models_of(A, B, C), 10_000.0, PreloadEverything())
    # b is never requested, so never loaded; c is loaded by its request, not by a plan before.
    assert kinds(result) == [(0.0, "a", "load_start"), (2.0, "a", "ready"),
                             (30.0, "c", "load_start"), (31.0, "c", "ready")]
    assert result.metrics.cold_starts == 2


def test_figures_match_the_independent_scorer_for_every_policy(
        small_trace: tuple[list[tuple[float, str]], dict[str, ModelProfile]]) -> None:
    trace, models = small_trace
    budget = 0.5 * sum(p.memory_mb for p in models.values())
    for name in POLICY_NAMES:
        result = run(name, trace, models, budget)
        recomputed = recompute_from_events(trace, models, result.events, budget)
        assert recomputed.requests == result.metrics.requests
        assert recomputed.cold_starts == result.metrics.cold_starts, name
        assert recomputed.budget_violations == result.metrics.budget_violations, name
        assert recomputed.memory_gb_s == pytest.approx(result.metrics.memory_gb_s, rel=1e-9)
        assert recomputed.mean_wait_s == pytest.approx(result.metrics.mean_wait_s, rel=1e-9)
        assert recomputed.p99_wait_s == pytest.approx(result.metrics.p99_wait_s, rel=1e-9)


def test_scorer_rejects_events_that_cannot_be_a_replay() -> None:
    models = models_of(A)
    trace = [(1.0, "a")]
    with pytest.raises(InconsistentEvents):
        recompute_from_events(trace, models, [], 2000)  # the cold request loaded nothing
    with pytest.raises(InconsistentEvents):
        recompute_from_events(trace, models, [Event(1.0, "a", "load_start"),
                                              Event(2.0, "a", "ready")], 2000)  # not load_s
    with pytest.raises(InconsistentEvents):
        recompute_from_events(trace, models, [Event(1.0, "a", "load_start"),
                                              Event(1.5, "a", "unload")], 2000)  # not ready


def test_oracle_has_the_fewest_cold_starts(
        small_trace: tuple[list[tuple[float, str]], dict[str, ModelProfile]]) -> None:
    trace, models = small_trace
    for share in (0.5, 1.0):
        budget = share * sum(p.memory_mb for p in models.values())
        cold = {name: run(name, trace, models, budget).metrics.cold_starts
                for name in POLICY_NAMES}
        assert cold["oracle"] == min(cold.values()), cold
        assert cold["oracle"] < 0.2 * cold["keepalive_10m"]


def _perturbed(trace: list[tuple[float, str]], cut: float,
               seed: int) -> list[tuple[float, str]]:
    """The same past; a different future after ``cut``."""
    rng = random.Random(seed)
    names = sorted({m for _, m in trace})
    head = [row for row in trace if row[0] < cut]
    tail = sorted((cut + rng.uniform(0.0, 3 * 3600), rng.choice(names))
                  for _ in range(len(trace) - len(head)))
    return head + tail


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if n != "oracle"])
def test_policies_never_peek_at_future_requests(
        name: str, small_trace: tuple[list[tuple[float, str]], dict[str, ModelProfile]]) -> None:
    trace, models = small_trace
    budget = 0.5 * sum(p.memory_mb for p in models.values())
    cut = 3 * 3600 + 0.5
    original = run(name, trace, models, budget)
    changed = run(name, _perturbed(trace, cut, seed=1), models, budget)
    before = [e for e in original.events if e.time < cut]
    assert before, "the prefix must exercise the policy"
    assert [e for e in changed.events if e.time < cut] == before


def test_the_no_peeking_check_catches_the_oracle(
        small_trace: tuple[list[tuple[float, str]], dict[str, ModelProfile]]) -> None:
    trace, models = small_trace
    budget = sum(p.memory_mb for p in models.values())
    cut = 3 * 3600 + 0.5
    # A request just after the cut for the slowest model: knowing it, the oracle starts the
    # load before the cut.
    slowest = max(models.values(), key=lambda p: p.load_s).name
    changed_trace = sorted([*trace, (cut + 0.5, slowest)])
    original = run("oracle", trace, models, budget)
    changed = run("oracle", changed_trace, models, budget)
    assert ([e for e in changed.events if e.time < cut]
            != [e for e in original.events if e.time < cut])


def test_a_policy_cannot_stall_the_simulation() -> None:
    class Spinner(Lru):
        def next_wakeup(self, now: float) -> float | None:
            return now  # "call me again right away", forever

    trace = [(float(t), "a") for t in range(0, 3600, 60)]
    result = simulate(trace, models_of(A), 2000, Spinner(models_of(A)), max_wakeups=1000)
    assert result.wakeups_capped
    assert result.metrics.requests == len(trace)


def test_keepalive_drops_a_model_whose_load_outlasts_the_keepalive() -> None:
    trace = [(0.0, "b"), (100.0, "b")]
    result = simulate(trace, models_of(B), 1000, KeepAlive(models_of(B), keepalive_s=1.0))
    assert ("b", "unload") in [(e.model, e.kind) for e in result.events]
    assert result.metrics.cold_starts == 2


def test_pinned_models_load_at_start_and_stay() -> None:
    pinned = ModelProfile("p", 500.0, 3.0, pinned=True)
    trace = [(1.0, "p"), (5.0, "a"), (500.0, "p")]
    for name in POLICY_NAMES:
        result = run(name, trace, models_of(pinned, A), 1600)
        assert result.events[0] == Event(0.0, "p", "load_start")
        assert not [e for e in result.events if e.model == "p" and e.kind == "unload"], name


def test_csv_round_trip(tmp_path: Path) -> None:
    models = models_of(A, ModelProfile("p,q", 10.5, 0.1, pinned=True))
    trace = [(0.1, "a"), (0.30000000000000004, "p,q")]
    events = [Event(0.1, "a", "load_start"), Event(2.1, "a", "ready")]
    write_models(tmp_path / "m.csv", models)
    write_trace(tmp_path / "t.csv", trace)
    write_events(tmp_path / "e.csv", events)
    assert read_models(tmp_path / "m.csv") == models
    assert read_trace(tmp_path / "t.csv", models) == trace  # floats back bit for bit
    assert read_events(tmp_path / "e.csv", models) == events


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("timestamp,model\n1,a\n0.5,a\n", 3, "sorted"),
    ("timestamp,model\n1,a\n2,zzz\n", 3, "unknown model"),
    ("time,model\n1,a\n", 1, "bad header"),
    ("timestamp,model\nx,a\n", 2, "not a number"),
    ("timestamp,model\n1,a,3\n", 2, "expected 2 fields"),
    ("timestamp,model\n-1,a\n", 2, "negative"),
    ("timestamp,model\nnan,a\n", 2, "not finite"),
])
def test_bad_trace_rows_are_rejected_with_their_line(tmp_path: Path, text: str, line: int,
                                                     fragment: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(TraceFormatError) as caught:
        read_trace(path, {"a"})
    assert f"trace.csv:{line}:" in str(caught.value)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(("text", "fragment"), [
    ("model,memory_mb,load_s\na,-1,2\n", "memory_mb must be positive"),
    ("model,memory_mb,load_s\na,100,0\n", "load_s must be positive"),
    ("model,memory_mb,load_s\na,100,1\na,100,1\n", "listed twice"),
    ("model,memory_mb,load_s,pinned\na,100,1,maybe\n", "not a boolean"),
    ("model,memory_mb,load_s,color\na,100,1,red\n", "bad header"),
    ("", "empty file"),
    ("model,memory_mb,load_s\n", "no models"),
])
def test_bad_model_rows_are_rejected(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "models.csv"
    path.write_text(text)
    with pytest.raises(TraceFormatError, match=fragment):
        read_models(path)
