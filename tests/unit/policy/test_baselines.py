from __future__ import annotations

import pytest

from controlplane.policy.baselines import AlwaysOn
from controlplane.policy.hybrid import HybridHistogram, _IdleHistogram
from controlplane.policy.oracle import Oracle, just_in_time
from controlplane.policy.simulator import simulate
from controlplane.policy.types import ClusterView, ModelProfile, Residency

from .helpers import periodic_trace


def test_always_on_loads_what_fits_in_declared_order() -> None:
    models = {n: ModelProfile(n, mb, 1.0) for n, mb in (("a", 600.0), ("b", 600.0),
                                                         ("c", 300.0))}
    actions = AlwaysOn(models).plan(ClusterView(0.0, 1000.0, models, {}))
    assert [a.model for a in actions] == ["a", "c"]  # b does not fit after a; c does


def test_always_on_evicts_lru_only_for_demand() -> None:
    models = {n: ModelProfile(n, 500.0, 1.0) for n in "abc"}
    trace = [(5.0, "a"), (6.0, "b"), (7.0, "c"), (8.0, "a"), (100.0, "c")]
    result = simulate(trace, models, 1000.0, AlwaysOn(models))
    unloads = [(e.time, e.model) for e in result.events if e.kind == "unload"]
    # At 7, c needs room: a (last used at 5) goes; at 8, a needs room: b (6) goes.
    assert unloads == [(7.0, "a"), (8.0, "b")]


def test_hybrid_prewarms_a_periodic_model_and_saves_memory() -> None:
    models = {"m": ModelProfile("m", 2048.0, 10.0)}
    trace = periodic_trace("m", 1200, 12, jitter_s=5.0, seed=3)  # every 20 minutes
    hybrid = simulate(trace, models, 4096.0, HybridHistogram(models))
    starts = [e.time for e in hybrid.events if e.kind == "load_start"]
    unloads = [e.time for e in hybrid.events if e.kind == "unload"]
    # Once representative, the model is dropped after each request and loaded again at the
    # pre-warm point (90% of the 5th percentile, here 19 minutes).
    assert len(unloads) >= len(trace) - 8
    late = [t for t, _ in trace][8:]
    late_cold = [t for t in late if any(s <= t < s + 10.0 for s in starts)]
    assert late_cold == []
    keep_range = simulate(trace, models, 4096.0, HybridHistogram(models, range_s=3600.0))
    assert hybrid.metrics.memory_gb_s < 0.6 * trace[-1][0] * 2.0
    assert keep_range.metrics.cold_starts <= 2


def test_hybrid_histogram_windows_and_fallbacks() -> None:
    hist = _IdleHistogram(240, 60.0)
    assert hist.windows(14400.0) == (0.0, 14400.0)  # too few idle times: standard keep-alive
    for _ in range(20):
        hist.add(30 * 60 + 20)  # every 30 minutes: all in bin 30
    prewarm, keepalive_end = hist.windows(14400.0)
    assert prewarm == pytest.approx(30 * 60 * 0.9)
    assert keepalive_end == pytest.approx(31 * 60 * 1.1)
    flat = _IdleHistogram(240, 60.0)
    for i in range(240):
        flat.add(i * 60 + 1)  # spread evenly: the CV is 0, not representative
    assert flat.windows(14400.0) == (0.0, 14400.0)
    oob = _IdleHistogram(240, 60.0)
    for _ in range(10):
        oob.add(6 * 3600)  # beyond the 4-hour range: forecast the next idle time
    assert oob.windows(14400.0) == pytest.approx((6 * 3600 * 0.85, 6 * 3600 * 1.15))


def test_oracle_loads_just_in_time_and_keeps_short_gaps() -> None:
    models = {"m": ModelProfile("m", 1000.0, 3.3)}
    trace = [(100.1, "m"), (102.0, "m"), (500.7, "m")]
    result = simulate(trace, models, 2000.0, Oracle(models, trace))
    kinds = [(e.kind, e.time) for e in result.events]
    assert kinds[0] == ("load_start", just_in_time(100.1, 3.3))
    assert ("unload", 102.0) not in kinds  # the gap 100.1 -> 102.0 is shorter than a load
    assert result.metrics.cold_starts == 0
    assert just_in_time(0.3, 0.1) + 0.1 <= 0.3


def test_oracle_evicts_the_model_used_furthest_away() -> None:
    models = {n: ModelProfile(n, 1000.0, 1.0) for n in "abc"}
    trace = [(10.0, "a"), (10.5, "b"), (11.0, "c"), (11.2, "a"), (500.0, "b")]
    oracle = Oracle(models, trace)
    for t, m in trace[:3]:
        oracle.observe(m, t)
    view = ClusterView(11.0, 2000.0, models, {"a": Residency.READY, "b": Residency.READY})
    (unload,) = oracle.on_demand("c", view)
    assert unload.model == "b"  # a is needed at 11.2, b only at 500
