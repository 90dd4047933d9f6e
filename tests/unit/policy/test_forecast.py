from __future__ import annotations

import math

import pytest

from controlplane.policy.decay import DecayedBins, DecayedRate
from controlplane.policy.forecast import ModelForecast
from controlplane.policy.idle import idle_bin
from controlplane.policy.patterns import DAY_S, CyclicProfile, PeriodDetector

from .helpers import poisson_times


def test_periodic_model_next_arrival_is_predicted() -> None:
    fc = ModelForecast()
    t = 0.0
    for i in range(40):
        t = 100.0 + 300.0 * i + (0.8 if i % 3 == 0 else -0.6)  # a little jitter
        fc.observe(t)
    found = fc.periodicity()
    assert found is not None
    assert found.period_s == pytest.approx(300.0, abs=1.0)
    assert found.jitter_s < 3.0
    predicted = fc.predicted_next(t + 10)
    assert predicted is not None
    assert predicted == pytest.approx(100.0 + 300.0 * 40, abs=3.0)
    # Half a period later the next fire is still the one expected.
    assert fc.predicted_next(t + 150) == pytest.approx(predicted)


def test_period_detector_ignores_requests_inside_a_batch() -> None:
    detector = PeriodDetector()
    for i in range(12):
        base = 600.0 * i
        for k, offset in enumerate((0.0, 1.5, 2.5)):
            detector.add(base + offset, None if i == 0 and k == 0 else (600.0 if k == 0 else 1.0))
    found = detector.period()
    assert found is not None
    assert found.period_s == pytest.approx(600.0, abs=0.5)


def test_irregular_arrivals_are_not_periodic() -> None:
    fc = ModelForecast()
    for t in poisson_times(1 / 300, 0, 20 * 3600, seed=3):
        fc.observe(t)
    assert fc.periodicity() is None
    assert fc.predicted_next(20 * 3600) is None


def test_poisson_rate_and_probability_estimates() -> None:
    rate = 1 / 60
    times = poisson_times(rate, 0.0, 3 * DAY_S, seed=1)
    fc = ModelForecast()
    for t in times:
        fc.observe(t)
    now = times[-1]
    assert fc.requests_per_day(now) == pytest.approx(rate * DAY_S, rel=0.1)
    # Memoryless: the chance of a request in the next minute does not depend on the silence.
    for silence in (5.0, 60.0, 180.0):
        p = fc.prob_request_within(now + silence, 60.0)
        assert p == pytest.approx(1 - math.exp(-rate * 60), abs=0.12)
    assert fc.hazard_now(now + 30) == pytest.approx(rate, rel=0.35)


def test_time_of_day_profile_follows_a_diurnal_model() -> None:
    # Busy from 09:00 to 17:00 (one request a minute), nearly silent otherwise.
    times = []
    for day in range(3):
        start = day * DAY_S
        times += poisson_times(1 / 60, start + 9 * 3600, start + 17 * 3600, seed=day)
        times += poisson_times(1 / 3600, start + 17 * 3600, start + 33 * 3600, seed=10 + day)
    times = sorted(t for t in times if t < 3 * DAY_S)
    fc = ModelForecast()
    for t in times:
        fc.observe(t)
    now = 3 * DAY_S
    rates = fc.time_of_day_rates(now)
    busy = sum(rates[9:17]) / 8
    quiet = sum(rates[0:6]) / 6
    assert busy == pytest.approx(1 / 60, rel=0.3)
    assert busy > 20 * quiet
    assert fc.time_of_day_factor(12 * 3600, now) > 2.0
    assert fc.time_of_day_factor(3 * 3600, now) < 0.5


def test_calendar_profile_needs_exposure_and_ignores_the_current_interval() -> None:
    profile = CyclicProfile(24, DAY_S, offset_s=0.0, half_life_s=3 * DAY_S,
                            min_exposure_s=DAY_S / 2)
    for i in range(100):
        profile.add(3600.0 + i)  # a burst at 01:00
    assert profile.factors(3700.0) == [1.0] * 24  # not enough history yet
    profile.advance(DAY_S)
    factors = profile.factors(DAY_S)
    assert factors[1] > 3.0 and factors[5] < 1.0
    now = DAY_S + 5 * 3600 + 20
    before = profile.factors(now)
    for i in range(50):  # a burst in the hour still being filled does not count yet
        profile.add(DAY_S + 5 * 3600 + 10 + i * 0.1)
    assert profile.factors(now) == before


def test_forecast_adapts_after_a_regime_change() -> None:
    fc = ModelForecast()
    busy = poisson_times(1 / 10, 0.0, DAY_S, seed=2)  # every ~10 s for a day
    quiet = poisson_times(1 / 1800, DAY_S, 3 * DAY_S, seed=4)  # then every ~30 min
    for t in busy:
        fc.observe(t)
    assert fc.prob_request_within(busy[-1] + 5, 60.0) > 0.9
    assert fc.trend(busy[-1]) == pytest.approx(1.0, rel=0.5)
    for t in quiet:
        fc.observe(t)
    now = quiet[-1] + 600
    # The old busy spell no longer says "any second now" after a ten-minute silence.
    assert fc.prob_request_within(now, 60.0) < 0.15
    assert fc.rate_recent(now) < 0.01
    assert fc.trend(quiet[-1]) < 0.5


def test_follow_on_counts_requests_during_a_load_after_silence() -> None:
    fc = ModelForecast(follow_window_s=20.0)
    for burst in range(8):
        start = burst * 3600.0
        for k in range(6):  # six requests within 15 s, then an hour of silence
            fc.observe(start + 3.0 * k)
    assert fc.follow_on(8 * 3600.0) == pytest.approx(5.0, abs=0.5)
    lazy = fc.cold_starts_per_day_if_lazy(8 * 3600.0)
    assert lazy == pytest.approx(fc.requests_per_day(8 * 3600.0), rel=0.2)


def test_memory_per_model_is_bounded() -> None:
    fc = ModelForecast()
    t = 0.0
    for i in range(2_000):
        t += 0.5 + (i % 7)
        fc.observe(t)
    fc.next_arrival(t)
    small = fc.stored_numbers()
    for i in range(60_000):
        t += 0.01 + (i % 13) * 0.3
        fc.observe(t)
    fc.next_arrival(t)
    assert fc.stored_numbers() == small
    assert fc.count == 62_000


def test_observe_tolerates_late_arrivals_from_a_batch() -> None:
    fc = ModelForecast()
    for t in (100.0, 200.0, 300.0, 250.0, 400.0):  # 250 arrives after 300 was fed
        fc.observe(t)
    assert fc.last_t == 400.0
    assert fc.count == 5
    assert fc.idle_count == 3  # the late one carries no interval
    assert 0.0 <= fc.prob_request_within(450.0, 100.0) <= 1.0


def test_decayed_structures_halve_and_renormalise() -> None:
    bins = DecayedBins(3, half_life_s=10.0)
    bins.add(0, 0.0)
    assert bins.value(0, 10.0) == pytest.approx(0.5)
    bins.add(1, 10_000.0)  # far beyond the renormalisation point
    assert bins.value(1, 10_000.0) == pytest.approx(1.0)
    assert bins.total(10_010.0) == pytest.approx(0.5)
    rate = DecayedRate(100.0)
    for i in range(2000):
        rate.add(i * 2.0)
    assert rate.rate(4000.0) == pytest.approx(0.5, rel=0.05)
    assert idle_bin(0.0) == 0 and idle_bin(1e9) == idle_bin(1e12)


def test_hazard_follows_news_in_a_sparse_tail_at_once() -> None:
    fc = ModelForecast()
    for i in range(5001):  # a well-sampled body: 5000 idle times of 1 s
        fc.observe(float(i))
    before = fc.hazard_now(5000.0 + 300.0)
    evidence = fc.evidence
    fc.observe(5001.0)
    assert fc.evidence - evidence < 0.001  # one more idle time in the body is hardly news
    t = 5001.0
    for _ in range(3):  # a new regime: requests every 5 minutes
        t += 300.0
        evidence = fc.evidence
        fc.observe(t)
        assert fc.evidence - evidence > 0.5  # where almost nothing was seen, it is
    # Three idle times are far fewer than the 5000 before, and only 15 minutes have passed,
    # but the hazard at a 5-minute silence is recomputed and has risen with them.
    assert fc.hazard_now(t + 300.0) > 5 * before


def test_reading_the_follow_on_estimate_changes_nothing_a_late_arrival_adds() -> None:
    """Live arrivals reach the policy in lagging batches; an explanation read in between
    must not close the burst they belong to (live decisions would depend on page views)."""
    read, unread = ModelForecast(follow_window_s=10.0), ModelForecast(follow_window_s=10.0)
    for fc in (read, unread):
        fc.observe(0.0)  # the first request: a burst begins
        fc.observe(1.0)
    assert read.follow_on(20.0) == 1.0  # the window has passed: as if the burst were closed
    for fc in (read, unread):
        fc.observe(2.0)  # late in the batch, but within the burst's window
    assert read.follow_on(30.0) == unread.follow_on(30.0) == 2.0
