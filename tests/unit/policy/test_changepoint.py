from __future__ import annotations

import random

import numpy as np
import pytest

from controlplane.policy.changepoint import THRESHOLD, ChangeTest
from controlplane.policy.forecast import ModelForecast
from controlplane.policy.patterns import DAY_S

from .helpers import poisson_times


def feed(fc: ModelForecast, times: list[float], *, read_every_s: float = 10.0) -> list[float]:
    """Observe ``times``, reading the hazard as the planner would (every few seconds), and
    return the times at which a change point was found."""
    changes = []
    next_read = -np.inf
    seen = fc.changes
    for t in times:
        fc.observe(t)
        if t >= next_read:
            fc.hazard_now(t)
            next_read = t + read_every_s
        if fc.changes > seen:
            seen = fc.changes
            changes.append(t)
    return changes


def test_uniform_scores_rarely_raise_an_alarm() -> None:
    rng = random.Random(1)
    test = ChangeTest()
    alarms = sum(1 for _ in range(200_000) if test.update(rng.random()))
    # Wald's bound puts the mean run between false alarms at exp(11) per side.
    assert alarms <= 2


@pytest.mark.parametrize(("score", "within"), [(1e-5, 3), (1 - 1e-5, 3), (0.1, 30), (0.9, 30)])
def test_scores_piled_up_on_one_side_raise_an_alarm(score: float, within: int) -> None:
    test = ChangeTest()
    fired = [k for k in range(1, 100) if test.update(score)]
    assert fired and fired[0] <= within
    assert test.busier < THRESHOLD and test.quieter < THRESHOLD  # restarted


def test_a_rare_model_turning_hot_is_relearned_within_seconds() -> None:
    fc = ModelForecast()
    rare = poisson_times(3 / DAY_S, 0.0, 2 * DAY_S, seed=1)
    hot = poisson_times(0.5, 2 * DAY_S, 2 * DAY_S + 600, seed=2)
    assert feed(fc, rare) == []
    changes = feed(fc, hot)
    now = hot[60] + 1.0  # two minutes in
    assert fc.hazard_now(now) == pytest.approx(0.5, rel=0.5)
    assert fc.prob_request_within(now, 10.0) > 0.9
    # Few idle times were ever seen, so the news alone would relearn it; the test agrees.
    assert changes and changes[0] - 2 * DAY_S < 30.0


def test_a_rate_rise_of_eight_times_is_found_within_minutes() -> None:
    fc = ModelForecast()
    before = poisson_times(40 / 3600, 0.0, DAY_S, seed=3)
    after = poisson_times(350 / 3600, DAY_S, DAY_S + 3600, seed=4)
    assert len(feed(fc, before)) <= 1  # at most one while the prior was still being replaced
    changes = feed(fc, after)
    # Half an hour in, the hazard reads the new rate. Without the test the day of 40/h idle
    # times, all longer than the new ones and so still "at risk" at every short silence,
    # held it near a quarter of that.
    now = DAY_S + 1800.0
    assert fc.hazard_now(now + 5.0) == pytest.approx(350 / 3600, rel=0.4)
    assert changes and changes[0] - DAY_S < 600.0


def test_bursts_like_the_bursts_before_are_not_regime_changes() -> None:
    rng = np.random.default_rng(5)
    times: list[float] = []
    t = 0.0
    bursts = 0
    while t < 2 * DAY_S:
        t += float(rng.exponential(3000.0))
        end = t + float(rng.exponential(300.0))
        times.extend(np.sort(rng.uniform(t, end, rng.poisson(0.2 * (end - t)))).tolist())
        t = end
        bursts += 1
    fc = ModelForecast()
    changes = feed(fc, times)
    late = [c for c in changes if c > DAY_S / 4]  # once the pattern is learned
    assert bursts > 40
    assert len(late) <= bursts // 10, (len(late), bursts)


def test_a_change_point_keeps_the_forecast_bounded() -> None:
    fc = ModelForecast()
    feed(fc, poisson_times(1 / 600, 0.0, DAY_S, seed=6))
    size = fc.stored_numbers()
    feed(fc, poisson_times(1.0, DAY_S, DAY_S + 300, seed=7))
    assert fc.changes >= 1
    assert fc.stored_numbers() == size
