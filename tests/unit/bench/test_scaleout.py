"""bench/scaleout.py's pure parts: the compressed trace and its spike, which waits a scale
event caused, the figures and the targets (the bench itself needs tritonservers and minutes)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.scaleout import (
    CYCLES,
    Sent,
    TraceConfig,
    Wait,
    build_trace,
    diurnal_rate,
    rate_at,
    replay_window,
    replicas_wanted,
    scale_caused,
    slow_like_a_load,
    spike_window,
    summarize,
    targets,
)

CFG = TraceConfig(cycle_s=48.0, seed=3)


def _count(trace: list[tuple[float, str]], model: str, a: float, b: float) -> int:
    return sum(1 for t, m in trace if m == model and a <= t < b)


def test_the_day_is_compressed_into_the_cycle_and_repeats() -> None:
    assert CFG.hour_s == 2.0
    assert CFG.at(1, 7.5) == 48.0 + 15.0
    assert diurnal_rate(2.0, 14.0, 14.0) == pytest.approx(2.0)
    assert diurnal_rate(2.0, 2.0, 14.0) == pytest.approx(0.4)
    for model in CFG.rates:
        assert rate_at(CFG, model, 5.0) == pytest.approx(rate_at(CFG, model, 53.0))


def test_the_spike_adds_its_rate_on_one_model_in_the_morning_of_every_day() -> None:
    s0, s1 = spike_window(CFG)
    assert (s0, s1) == (48.0 + 15.0, 48.0 + 21.0)
    assert spike_window(CFG, 0) == (15.0, 21.0)
    base = diurnal_rate(CFG.rates["hot"], 8.0, CFG.peak_hour)
    assert rate_at(CFG, "hot", 16.0) == pytest.approx(base + CFG.spike_rate_per_s)
    assert rate_at(CFG, "feed", 16.0) == pytest.approx(
        diurnal_rate(CFG.rates["feed"], 8.0, CFG.peak_hour))
    # more than the two instances carry: the replica plan asks for three
    assert replicas_wanted(rate_at(CFG, "hot", 16.0)) >= 3
    assert all(replicas_wanted(CFG.rates[m]) <= 2 for m in CFG.rates)


def test_the_trace_is_seeded_sorted_and_shows_the_spike() -> None:
    cfg = TraceConfig(cycle_s=240.0, seed=5)
    trace = build_trace(cfg)
    assert trace == build_trace(cfg)
    assert [t for t, _ in trace] == sorted(t for t, _ in trace)
    assert trace[-1][0] < CYCLES * cfg.cycle_s
    assert {m for _, m in trace} == set(cfg.rates)
    for day in range(CYCLES):
        s0, s1 = spike_window(cfg, day)
        during = _count(trace, "hot", s0, s1) / (s1 - s0)
        before = _count(trace, "hot", s0 - (s1 - s0), s0) / (s1 - s0)
        assert during > before + cfg.spike_rate_per_s / 2
        assert during == pytest.approx(rate_at(cfg, "hot", (s0 + s1) / 2), rel=0.35)
    w0, w1 = replay_window(cfg)
    assert cfg.cycle_s <= w0 < spike_window(cfg)[0] < w1 <= 2 * cfg.cycle_s


def test_waits_on_the_added_instance_or_after_the_decision_are_the_scale_events() -> None:
    waits = [Wait("hot", 1.0, "a"), Wait("hot", 12.0, "c"), Wait("feed", 11.0, "b"),
             Wait("feed", 9.0, "c")]
    assert scale_caused(waits, 10.0, ["c"]) == waits[1:]
    assert scale_caused(waits, None, []) == []
    assert scale_caused(waits, None, ["c"]) == [waits[1], waits[3]]


def test_slow_like_a_load_counts_requests_beyond_steady_p99_plus_half_the_load() -> None:
    requests = [Sent("hot", 0.0, 1.4, True), Sent("hot", 0.1, 1.2, True),
                Sent("feed", 0.2, 0.6, True), Sent("hot", 0.3, 5.0, False)]
    assert slow_like_a_load(requests, 0.05, {"hot": 2.5, "feed": 1.0}) == 2


def _run(waits: list[Wait], latency_spike: float, lost: int = 0,
         added: tuple[str, ...] = ("c",)) -> dict[str, Any]:
    requests = [Sent("feed", 0.1 * i, 0.01, True, "a") for i in range(100)]  # steady 0-10 s
    requests += [Sent("hot", 10 + 0.1 * i, latency_spike, True, "b") for i in range(50)]
    requests += [Sent("hot", 16.0, 0.01, False, "b")] * lost
    return summarize(requests, waits, steady=(0.0, 10.0), spike=(10.0, 15.0),
                     decision_at=8.0, first_request_at=9.5, added=list(added),
                     instances_max=2 + len(added), spike_start=10.0, load_s={"hot": 2.5})


def test_summarize_and_targets() -> None:
    ours = _run([], 0.012)
    assert ours["requests"] == 150 and ours["lost"] == 0
    assert ours["latency_ms"]["steady"] == {"n": 100, "p50": 10.0, "p99": 10.0}
    assert ours["spike_p99_over_steady"] == 1.2
    assert ours["decision_before_spike_s"] == 2.0
    assert ours["first_request_after_decision_s"] == 1.5
    reactive = _run([Wait("hot", 12.0, "c")] * 4, 2.0, lost=1)
    assert reactive["waited_for_load"] == reactive["scale_caused_waits"] == 4
    assert reactive["lost"] == 1 and reactive["spike_p99_over_steady"] == 200.0
    unaware = _run([Wait("feed", 9.0, "c"), Wait("hot", 9.1, "c")], 1.0)
    assert unaware["waits_by_model"] == {"feed": 1, "hot": 1}
    met = targets({"ours": ours, "reactive": reactive, "unaware": unaware})
    assert all(met.values()), met
    slow = _run([Wait("hot", 12.0, "a")], 0.02, lost=1)
    missed = targets({"ours": slow, "reactive": reactive, "unaware": unaware})
    assert not missed["ours_zero_scale_caused_waits"]
    assert not missed["ours_spike_p99_within_1_5x_steady"]
    assert not missed["ours_nothing_lost"]
    assert missed["ours_fewer_waits_than_reactive"]
    assert not targets({"ours": _run([], 0.01, added=()), "reactive": reactive,
                        "unaware": unaware})["ours_scaled_out"]
