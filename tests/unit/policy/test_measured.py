from __future__ import annotations

import pytest

from controlplane.policy.measured import RecentRates, SeasonalRates


def test_rate_counts_the_window_only() -> None:
    rates = RecentRates(10.0)
    for k in range(20):  # one request a second, t = 0 .. 19
        rates.observe("a", float(k))
    assert rates.count("a", 19.5) == 10  # seconds 10 .. 19
    assert rates.rate("a", 19.5) == pytest.approx(1.0)
    assert rates.rate("a", 25.0) == pytest.approx(0.4)  # seconds 16 .. 19 are left
    assert rates.rate("a", 40.0) == 0.0
    assert rates.rate("unseen", 19.5) == 0.0


def test_a_burst_shows_within_seconds_and_rates_lists_busy_models() -> None:
    rates = RecentRates(60.0)
    rates.observe("quiet", 1.0)
    for k in range(300):  # 100/s for 3 s
        rates.observe("hot", 100.0 + k / 100)
    assert rates.rate("hot", 103.0) == pytest.approx(300 / 60)
    assert rates.rates(103.0) == {"hot": pytest.approx(5.0)}  # "quiet" left the window


def test_out_of_order_arrivals_count_unless_older_than_the_window() -> None:
    rates = RecentRates(5.0)
    rates.observe("a", 10.2)
    rates.observe("a", 9.1)  # a lagging batch
    rates.observe("a", 2.0)  # older than the ring: ignored
    assert rates.count("a", 10.5) == 2


def test_memory_is_bounded_per_model_and_in_models() -> None:
    rates = RecentRates(3.0, max_models=2)
    for k in range(10_000):
        rates.observe("a", k / 100)
    assert len(rates._models["a"][0]) == 3  # one slot per second of the window
    rates.observe("b", 99.0)
    rates.observe("c", 99.0)  # "a" was observed least recently: forgotten
    assert rates.rate("a", 99.5) == 0.0
    assert rates.count("b", 99.5) == rates.count("c", 99.5) == 1


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="window_s"):
        RecentRates(0.0)
    with pytest.raises(ValueError, match="max_models"):
        RecentRates(1.0, max_models=0)
    with pytest.raises(ValueError, match="bin_s"):
        SeasonalRates(10.0, 20.0)


def test_seasonal_forecast_reads_the_cycle_before() -> None:
    seasonal = SeasonalRates(period_s=100.0, bin_s=10.0, cycles=1)
    for k in range(200):  # 1/s, except 5/s in [40, 50) of each cycle
        t = float(k)
        seasonal.observe("m", t)
        if 40 <= t % 100 < 50:
            for j in range(1, 5):
                seasonal.observe("m", t + j / 5)
    assert seasonal.rate_ahead("m", 50.0, 10.0) is None  # no whole cycle seen yet
    assert seasonal.rate_ahead("m", 125.0, 10.0) == pytest.approx(1.0)  # bins 12, 13
    assert seasonal.rate_ahead("m", 125.0, 20.0) == pytest.approx(5.0)  # reaches bin 14
    assert seasonal.rate_ahead("other", 125.0, 20.0) == 0.0
