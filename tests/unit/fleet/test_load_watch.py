"""Measured load: rate over the window, recent and steady p50, bounded per model."""

from __future__ import annotations

from controlplane.fleet.load_watch import MIN_SAMPLES, LoadWatch
from controlplane.traffic.observation import Observation


def _obs(model: str, at: float, latency: float, outcome: str = "OK",
         wait_s: float | None = None) -> Observation:
    return Observation(model, "", (), at, latency, outcome, wait_s is not None, wait_s)


def test_rate_recent_and_steady_latency() -> None:
    now = [0.0]
    watch = LoadWatch(10.0, clock=lambda: now[0])
    # minute 0: 60 requests at 10 ms; minute 1: 60 at 40 ms (saturated)
    for k in range(60):
        watch.observation(_obs("m", k * 1.0, 0.010))
    for k in range(60):
        watch.observation(_obs("m", 60 + k * 1.0, 0.040))
    now[0] = 119.5
    assert watch.rate("m") == 1.0  # 10 requests in the last 10 s
    assert watch.p50_steady_s("m") == 0.010  # minute 1 is not complete yet
    assert watch.p50_recent_s("m") == 0.040
    assert watch.rate("other") == 0.0 and watch.p50_recent_s("other") is None


def test_failures_and_load_waits_do_not_count_as_latency() -> None:
    now = [100.0]
    watch = LoadWatch(60.0, clock=lambda: now[0])
    for k in range(MIN_SAMPLES):
        watch.observation(_obs("m", 90 + k * 0.1, 5.0, outcome="UNAVAILABLE"))
    assert watch.p50_recent_s("m") is None  # failures give no latency
    for k in range(MIN_SAMPLES):
        watch.observation(_obs("m", 90 + k * 0.1, 3.02, wait_s=3.0))
    recent = watch.p50_recent_s("m")
    assert recent is not None and abs(recent - 0.02) < 1e-9  # the load's wait taken out
    assert watch.rate("m") == 2 * MIN_SAMPLES / 60.0


def test_models_beyond_the_bound_are_counted_but_not_timed() -> None:
    watch = LoadWatch(10.0, clock=lambda: 5.0, max_models=2)
    for name in ("a", "b", "c"):
        watch.observation(_obs(name, 1.0, 0.01))
    assert sorted(watch._latency) == ["a", "b"]
