"""The autoscaler's decisions on a fake clock (snapshots built by hand)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from controlplane.config import AutoscalerSettings, FleetSettings
from controlplane.policy.autoscale import (
    AutoscaleOptions,
    Autoscaler,
    FleetSnapshot,
    ModelLoad,
    forecast_ahead,
)
from controlplane.policy.registry import make_policy
from controlplane.policy.types import ModelProfile

OPTIONS = AutoscaleOptions(
    min_instances=1, max_instances=4, standby=0, scale_out_cooldown_s=60.0,
    scale_in_cooldown_s=600.0, max_in_flight_per_replica=8.0, latency_ratio=2.0,
    lead_margin_s=60.0, default_warm_up_s=30.0, rate_per_replica=5.0, instance_budget_mb=None)
PEAK_AT, PEAK_END = 1000.0, 1200.0


class Peak:
    """A forecast: 2/s, except 14/s in [PEAK_AT, PEAK_END)."""

    def rate_ahead(self, model: str, now: float, horizon_s: float) -> float:
        return 14.0 if now + horizon_s >= PEAK_AT and now < PEAK_END else 2.0


def load(ahead: float = 0.0, measured: float = 0.0, replicas: int = 1, in_flight: int = 0,
         **kw: float | None) -> ModelLoad:
    return ModelLoad("ranker", 1000.0, min(ahead, 2.0), ahead, measured, in_flight, replicas,
                     p50_recent_s=kw.get("p50_recent_s"), p50_steady_s=kw.get("p50_steady_s"))


def snap(now: float, *models: ModelLoad, serving: int = 1, warming: int = 0, standby: int = 0,
         **kw: float) -> FleetSnapshot:
    return FleetSnapshot(now, serving, warming, standby, 0, tuple(models),
                         unplaced=int(kw.get("unplaced", 0)), warm_up_s=kw.get("warm_up_s"))


def test_scales_out_ahead_of_a_forecast_peak_by_the_lead_and_not_earlier() -> None:
    scaler, forecast = Autoscaler(OPTIONS), Peak()
    serving, first = 1, None
    for k in range(0, 240):  # every 5 s
        now = 5.0 * k
        lead = scaler.lead_for(None)
        ahead = forecast_ahead(forecast, "ranker", now, lead)
        assert ahead is not None
        d = scaler.decide(snap(now, load(ahead, measured=2.0, replicas=serving),
                               serving=serving))
        if d.action == "scale_out":
            first = d if first is None else first
            serving += d.count
    assert scaler.lead_for(None) == 90.0  # default warm-up 30 s + margin 60 s
    assert first is not None and first.at == PEAK_AT - 90.0
    assert first.count == 2 and first.target_instances == 3  # 14/s at 5/s a replica
    assert any("forecast 14.0/s within the 90 s lead (warm-up 30 s + margin 60 s)" in r
               and "needs 3 replica(s)" in r and "1 serve" in r for r in first.reasons)


def test_the_lead_follows_the_measured_warm_up() -> None:
    scaler = Autoscaler(OPTIONS)
    assert scaler.lead_s(snap(0.0, warm_up_s=45.0)) == 105.0
    assert scaler.lead_s(snap(0.0)) == 90.0


def test_a_burst_in_the_measured_rate_scales_out_without_a_forecast() -> None:
    d = Autoscaler(OPTIONS).decide(snap(10.0, load(0.0, measured=12.0), serving=1))
    assert (d.action, d.count, d.target_instances) == ("scale_out", 2, 3)
    assert any("measured 12.0/s" in r for r in d.reasons)


def test_saturation_asks_for_one_more_instance() -> None:
    scaler = Autoscaler(OPTIONS)
    d = scaler.decide(snap(0.0, load(1.0, 1.0, replicas=2, in_flight=20), serving=2))
    assert (d.action, d.count, d.target_instances) == ("scale_out", 1, 3)
    assert any("20 in flight on 2 replica(s) (10.0 each, above 8)" in r for r in d.reasons)
    slow = load(1.0, 1.0, replicas=2, p50_recent_s=0.5, p50_steady_s=0.1)
    d = Autoscaler(OPTIONS).decide(snap(0.0, slow, serving=2))
    assert d.target_instances == 3 and any("p50 500 ms against 100 ms" in r for r in d.reasons)
    fine = load(1.0, 6.0, replicas=2, in_flight=16, p50_recent_s=0.15, p50_steady_s=0.1)
    assert Autoscaler(OPTIONS).decide(snap(0.0, fine, serving=2)).action == "none"


def test_unplaced_replicas_and_memory_ask_for_instances() -> None:
    d = Autoscaler(OPTIONS).decide(snap(0.0, load(1.0), serving=1, unplaced=2))
    assert (d.action, d.target_instances) == ("scale_out", 2)
    budgeted = replace(OPTIONS, instance_budget_mb=1500.0)
    models = [replace(load(1.0), model=f"m{k}") for k in range(4)]  # 4 x 1000 MB
    d = Autoscaler(budgeted).decide(snap(0.0, *models, serving=1))
    assert d.target_instances == 3
    assert any("4000 MB of wanted replicas needs 3 instance(s) of 1500 MB" in r
               for r in d.reasons)


def test_standby_is_promoted_at_once_when_saturated_even_in_cooldown() -> None:
    scaler = Autoscaler(replace(OPTIONS, standby=1))
    assert scaler.decide(snap(0.0, load(0.0, 7.0), serving=1, standby=1)).action == \
        "promote_standby"
    # 10 s later: in the scale-out cooldown, but saturated with a standby left
    d = scaler.decide(snap(10.0, load(0.0, 7.0, replicas=2, in_flight=30), serving=2,
                           standby=1))
    assert (d.action, d.count, d.standby_wanted) == ("promote_standby", 1, 1)
    # not saturated: the cooldown holds the next promotion
    d = scaler.decide(snap(20.0, load(0.0, 18.0, replicas=3), serving=3, standby=1))
    assert d.action == "none" and "cooldown 60 s, 50 s left" in d.reasons[0]


def test_scale_out_cooldown() -> None:
    scaler = Autoscaler(OPTIONS)
    assert scaler.decide(snap(0.0, load(0.0, 7.0), serving=1)).action == "scale_out"
    held = scaler.decide(snap(30.0, load(0.0, 12.0, replicas=2), serving=2))
    assert held.action == "none" and "30 s left" in held.reasons[0]
    assert scaler.decide(snap(60.0, load(0.0, 12.0, replicas=2), serving=2)).count == 1


def test_scale_in_needs_the_forecast_and_the_measured_load_and_the_cooldown() -> None:
    scaler = Autoscaler(OPTIONS)
    assert scaler.decide(snap(0.0, load(0.0, 12.0), serving=1)).action == "scale_out"
    # measured load low, forecast ahead still high: stay
    assert scaler.decide(snap(700.0, load(12.0, 1.0, 3), serving=3)).action == "none"
    # forecast low, measured still high: stay
    assert scaler.decide(snap(710.0, load(1.0, 12.0, 3), serving=3)).action == "none"
    # both low, 720 s after the scale-out (past the 600 s cooldown): one goes
    d = scaler.decide(snap(720.0, load(1.0, 1.0, 3), serving=3))
    assert (d.action, d.count) == ("scale_in", 1)
    assert "forecast ahead needs 1 and the measured load 1, both below the 3 serving" in \
        d.reasons[0]
    # the scale-in itself starts the cooldown
    held = scaler.decide(snap(800.0, load(1.0, 1.0, 2), serving=2))
    assert held.action == "none" and "520 s left" in held.reasons[0]


def test_min_and_max_caps_are_said() -> None:
    capped = Autoscaler(OPTIONS).decide(snap(0.0, load(0.0, 40.0), serving=1))
    assert capped.target_instances == 4 and capped.count == 3
    assert any("capped at max_instances 4 (wanted 8)" in r for r in capped.reasons)
    floor = Autoscaler(replace(OPTIONS, min_instances=2)).decide(
        snap(0.0, load(0.0, 0.0, replicas=0), serving=3))
    assert (floor.action, floor.target_instances) == ("scale_in", 2)
    assert any("at least min_instances 2 (load needs 0)" in r for r in floor.reasons)
    never_below = Autoscaler(replace(OPTIONS, min_instances=2)).decide(
        snap(0.0, load(0.0, 0.0, replicas=0), serving=2))
    assert never_below.action == "none"


def test_history_is_bounded_and_keeps_the_latest_none() -> None:
    scaler = Autoscaler(replace(OPTIONS, history_size=3, scale_out_cooldown_s=0.0,
                                scale_in_cooldown_s=0.0))
    for k in range(10):  # alternate 1 -> 2 -> 1 ...
        serving = 1 + k % 2
        scaler.decide(snap(float(k), load(0.0, 7.0 if serving == 1 else 1.0, serving),
                           serving=serving))
    assert [d.at for d in scaler.history] == [7.0, 8.0, 9.0]
    scaler.decide(snap(10.0, load(0.0, 7.0, 2), serving=2))
    scaler.decide(snap(11.0, load(0.0, 7.0, 2), serving=2))
    assert [(d.at, d.action) for d in scaler.history][-2:] == [(9.0, "scale_in"),
                                                               (11.0, "none")]


def test_options_from_settings() -> None:
    options = AutoscaleOptions.of(
        AutoscalerSettings(min_instances=2, max_instances=6, standby=1, lead_margin_s=15.0),
        FleetSettings(replica_rate_per_s=3.0, max_replicas=2, measured_rate_window_s=30.0),
        2048.0)
    assert (options.min_instances, options.max_instances, options.standby) == (2, 6, 1)
    assert (options.rate_per_replica, options.max_replicas, options.instance_budget_mb) == (
        3.0, 2, 2048.0)
    assert (options.lead_margin_s, options.measured_window_s) == (15.0, 30.0)
    with pytest.raises(ValueError, match="min_instances"):
        replace(OPTIONS, min_instances=5)


def test_forecast_ahead_reads_the_planner() -> None:
    models = {"m": ModelProfile("m", 100.0, 2.0)}
    planner = make_policy("ours", models, None)
    assert forecast_ahead(planner, "m", 0.0, 90.0) == 0.0  # not seen yet
    rng, t = random.Random(3), 0.0
    while t < 3600.0:  # about 4/s
        t += rng.expovariate(4.0)
        planner.observe("m", t)
    ahead = forecast_ahead(planner, "m", t, 90.0)
    assert ahead is not None and 2.0 < ahead < 8.0
    assert forecast_ahead(make_policy("lru", models, None), "m", t, 90.0) is None
