from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest

from controlplane.policy.planner import ForecastPlanner
from controlplane.policy.registry import make_policy
from controlplane.policy.simulator import DEFAULT_EPOCH_OFFSET_S, simulate
from controlplane.policy.types import Action, ClusterView, ModelProfile, Residency

from .helpers import periodic_trace, poisson_times


class Checked(ForecastPlanner):
    """The planner, with every decision checked against the budget and the pins."""

    def plan(self, view: ClusterView) -> list[Action]:
        actions = super().plan(view)
        unloads = [a for a in actions if a.kind == "unload"]
        loads = [a for a in actions if a.kind == "load"]
        assert actions == unloads + loads, "unloads come first"
        for a in unloads:
            assert not view.models[a.model].pinned
            assert view.state(a.model) is Residency.READY
        for a in loads:
            assert view.state(a.model) is Residency.COLD
        after = (view.resident_mb() - sum(view.models[a.model].memory_mb for a in unloads)
                 + sum(view.models[a.model].memory_mb for a in loads))
        assert after <= view.budget_mb + 1e-6 or not loads, "a preload went over the budget"
        return actions

    def on_demand(self, model: str, view: ClusterView) -> list[Action]:
        actions = super().on_demand(model, view)
        for a in actions:
            assert a.kind == "unload"
            assert not view.models[a.model].pinned
            assert view.state(a.model) is Residency.READY
        return actions


def run(trace: list[tuple[float, str]], models: Mapping[str, ModelProfile], budget_mb: float,
        price: float = 3000.0) -> tuple[Checked, object]:
    policy = Checked(models, price, epoch_offset_s=DEFAULT_EPOCH_OFFSET_S)
    return policy, simulate(trace, models, budget_mb, policy)


@pytest.mark.parametrize("share", [0.3, 0.6, 1.0])
def test_plans_respect_the_budget_and_the_pins(
        small_trace: tuple[list[tuple[float, str]], dict[str, ModelProfile]],
        share: float) -> None:
    trace, models = small_trace
    assert any(p.pinned for p in models.values())
    _, result = run(trace, models, share * sum(p.memory_mb for p in models.values()))
    pinned = {n for n, p in models.items() if p.pinned}
    events = result.events  # type: ignore[attr-defined]
    assert all(e.kind != "unload" for e in events if e.model in pinned)


def test_periodic_models_are_ready_before_their_requests() -> None:
    models = {
        "every2m": ModelProfile("every2m", 2048.0, 20.0),
        "every5m": ModelProfile("every5m", 4096.0, 30.0),
        "every15m": ModelProfile("every15m", 1024.0, 8.0),
    }
    trace = sorted(periodic_trace("every2m", 120, 10, jitter_s=1.0, seed=1)
                   + periodic_trace("every5m", 300, 10, jitter_s=2.0, start_s=50, seed=2)
                   + periodic_trace("every15m", 900, 10, jitter_s=1.0, start_s=90, seed=3))
    budget = sum(p.memory_mb for p in models.values())
    _, result = run(trace, models, budget, price=1000.0)
    warm_up = 4 * 3600.0  # long enough to have seen five fires of the slowest
    late = [t for t, _ in trace if t >= warm_up]
    events = result.events  # type: ignore[attr-defined]
    loads = sorted((e.time, e.model) for e in events if e.kind == "load_start")
    cold_late = _cold_requests(trace, models, events, since=warm_up)
    assert cold_late <= 1, f"{cold_late} cold starts among {len(late)} requests after warm-up"
    always_on = sum(p.memory_mb / 1024 for p in models.values()) * trace[-1][0]
    memory = result.metrics.memory_gb_s  # type: ignore[attr-defined]
    assert memory < 0.5 * always_on
    # Loads are preloads: one per fire, not more.
    late_loads = [t for t, _ in loads if t >= warm_up]
    assert len(late_loads) <= len(late) + 3


def _cold_requests(trace: list[tuple[float, str]], models: Mapping[str, ModelProfile],
                   events: object, since: float) -> int:
    import bisect

    starts: dict[str, list[float]] = {}
    for e in events:  # type: ignore[attr-defined]
        if e.kind == "load_start":
            starts.setdefault(e.model, []).append(e.time)
    cold = 0
    for t, m in trace:
        if t < since:
            continue
        s = starts.get(m, [])
        k = bisect.bisect_right(s, t) - 1
        if k >= 0 and t < s[k] + models[m].load_s:
            cold += 1
    return cold


def test_no_flapping_on_a_steady_pattern() -> None:
    # A busy model is worth holding: once its pattern is learned it is never dropped.
    models = {"busy": ModelProfile("busy", 2048.0, 10.0),
              "cron": ModelProfile("cron", 3072.0, 15.0)}
    busy = [(t, "busy") for t in poisson_times(1 / 20, 0, 8 * 3600, seed=5)]
    cron = periodic_trace("cron", 600, 8, jitter_s=1.0, seed=6)
    trace = sorted(busy + cron)
    _, result = run(trace, models, sum(p.memory_mb for p in models.values()), price=1000.0)
    events = result.events  # type: ignore[attr-defined]
    busy_loads = [e.time for e in events if e.model == "busy" and e.kind == "load_start"]
    assert len(busy_loads) <= 3 and max(busy_loads) < 900.0, busy_loads
    # The cron model is loaded once per fire at most: no unload/load pair between two fires
    # beyond the one preload the next fire needs.
    fires = [t for t, m in trace if m == "cron"]
    for a, b in itertools.pairwise(fires):
        loads = [e for e in events if e.model == "cron" and e.kind == "load_start"
                 and a < e.time <= b]
        assert len(loads) <= 1, (a, b, loads)


def test_the_knob_trades_memory_for_cold_starts(
        small_trace: tuple[list[tuple[float, str]], dict[str, ModelProfile]]) -> None:
    trace, models = small_trace
    budget = sum(p.memory_mb for p in models.values())
    points = []
    for price in (30.0, 1000.0, 30000.0):
        _, result = run(trace, models, budget, price=price)
        m = result.metrics  # type: ignore[attr-defined]
        points.append((m.memory_gb_s, m.cold_starts))
    assert points[0][0] < points[1][0] < points[2][0]
    assert points[0][1] > points[1][1] > points[2][1]


def test_explain_says_what_and_why() -> None:
    models = {"cron": ModelProfile("cron", 2048.0, 20.0),
              "pin": ModelProfile("pin", 100.0, 1.0, pinned=True),
              "never": ModelProfile("never", 500.0, 2.0),
              "never_big": ModelProfile("never_big", 8192.0, 30.0)}
    planner = ForecastPlanner(models, 3000.0)
    trace = periodic_trace("cron", 900, 3, seed=1)
    for t, m in trace:
        planner.observe(m, t)
    now = trace[-1][0] + 60
    residency = {"pin": Residency.READY, "cron": Residency.COLD}
    view = ClusterView(now, 10_000.0, models, residency)
    planner.plan(view)
    decisions = {d.model: d for d in planner.explain(view)}
    assert decisions["pin"].decision == "pinned"
    # Not requested yet: a small model is worth holding on the prior, a big one is not.
    assert decisions["never"].decision == "preload"
    assert "not requested yet" in decisions["never"].why
    assert decisions["never_big"].decision == "lazy"
    assert "no requests" in decisions["never_big"].why
    cron = decisions["cron"]
    assert cron.decision == "preload"
    assert cron.preload_at is not None
    expected = planner._states["cron"].forecast.predicted_next(now)
    assert expected is not None
    assert expected - 60 < cron.preload_at < expected - models["cron"].load_s
    assert cron.requests_per_day == pytest.approx(96, rel=0.25)
    assert cron.warm_cost_gbh_per_day == pytest.approx(48.0)
    assert "periodic" in cron.why


def test_on_demand_frees_room_without_touching_pinned_or_loading_models() -> None:
    models = {n: ModelProfile(n, 1000.0, 5.0, pinned=(n == "p")) for n in "pabcd"}
    planner = ForecastPlanner(models, 3000.0)
    for i, m in enumerate("abc"):
        planner.observe(m, float(i))
    residency = {"p": Residency.READY, "a": Residency.READY, "b": Residency.LOADING,
                 "c": Residency.READY}
    view = ClusterView(10.0, 4000.0, models, residency)
    planner.observe("d", 10.0)
    unloads = planner.on_demand("d", view)
    assert len(unloads) == 1
    assert unloads[0].model in {"a", "c"}
    assert planner.on_demand("d", ClusterView(10.0, 10_000.0, models, residency)) == []


def test_live_style_batches_arrive_after_the_plan() -> None:
    models = {"m": ModelProfile("m", 1000.0, 5.0)}
    planner = make_policy("ours", models)
    residency: dict[str, Residency] = {"m": Residency.READY}
    for step in range(50):
        now = 100.0 + 5.0 * step
        planner.plan(ClusterView(now, 4000.0, models, residency))
        for k in range(10):  # a batch of arrivals from the last few seconds
            planner.observe("m", now - 4.5 + 0.4 * k)
        wake = planner.next_wakeup(now)
        assert wake is None or wake >= now
    # Busy right up to now: keep it.
    assert planner.plan(ClusterView(400.0, 4000.0, models, residency)) == []


def test_make_policy_guards_the_trace_and_names() -> None:
    models = {"m": ModelProfile("m", 1000.0, 5.0)}
    with pytest.raises(ValueError, match="only the oracle"):
        make_policy("ours", models, trace=[(0.0, "m")])
    with pytest.raises(ValueError, match="needs the trace"):
        make_policy("oracle", models)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("fifo", models)
    with pytest.raises(ValueError):
        make_policy("ours", models, 0.0)


def test_a_late_fire_is_waited_for_while_it_is_worth_the_memory() -> None:
    from controlplane.policy.forecast import ModelForecast
    from controlplane.policy.windows import load_margin_s, periodic_window

    fc = ModelForecast()
    trace = periodic_trace("m", 300.0, 2.0, jitter_s=3.0, seed=1)
    for t, _ in trace:
        fc.observe(t)
    found = fc.periodicity()
    assert found is not None
    now = trace[-1][0] + 30.0
    fire = fc.predicted_next(now)
    assert fire is not None
    profile = ModelProfile("m", 5000.0, 2.0)
    ends = {}
    for price in (30.0, 300.0, 1e6):
        plan = periodic_window(profile, fc, now, price, resident=False)
        assert plan is not None
        ends[price] = plan.windows[-1].end - fire
    # Cheap cold starts: the window ends a margin after the jitter, as before.
    assert ends[30.0] == pytest.approx(found.jitter_s + load_margin_s(profile))
    # Dear ones: a fire that has not come yet is waited for longer, up to four sigmas
    # (twice the jitter bound).
    assert ends[30.0] < ends[300.0] <= ends[1e6]
    assert ends[1e6] == pytest.approx(2.0 * found.jitter_s)


def test_the_scan_of_every_model_is_spread_over_the_passes() -> None:
    """Each pass looks at a share of the models (the time since the last pass over the scan
    period), in turn: every model within the period, none twice, no pass at all of them but
    the first."""
    models = {f"m{i:03d}": ModelProfile(f"m{i:03d}", 100.0, 1.0) for i in range(95)}
    planner = ForecastPlanner(models)
    looked: list[list[str]] = []
    original = planner._refresh

    def refresh(name: str, view: ClusterView) -> None:
        looked[-1].append(name)
        original(name, view)

    planner._refresh = refresh  # type: ignore[method-assign]
    for k in range(61):
        looked.append([])
        planner.plan(ClusterView(10.0 * k, 1e9, models, {}))
    assert sorted(looked[0]) == sorted(models)  # the first pass knows nothing yet: all
    per_pass = [len(names) for names in looked[1:]]
    assert max(per_pass) == 4 and min(per_pass) >= 3  # ceil(95 * 10 / 300)
    first_period = [n for names in looked[1:31] for n in names]
    assert set(first_period) == set(models)  # every model within 300 s ...
    assert len(first_period) - len(set(first_period)) <= 30  # ... the turn wraps once at most
    # each model is looked at again within the period: never more than 300 s apart
    last: dict[str, float] = dict.fromkeys(models, 0.0)
    for k, names in enumerate(looked[1:], start=1):
        for n in names:
            assert 10.0 * k - last[n] <= 300.0
            last[n] = 10.0 * k


def test_explained_figures_are_at_most_a_minute_old_and_fresh_after_a_request() -> None:
    models = {"a": ModelProfile("a", 500.0, 2.0), "b": ModelProfile("b", 500.0, 2.0)}
    planner = ForecastPlanner(models)
    for t in poisson_times(1 / 600, 0.0, 86400.0, seed=4):
        planner.observe("a", t)
    planner.observe("b", 100.0)
    start = 90_000.0
    for now in (start + 7.5 * k for k in range(40)):
        view = ClusterView(now, 1e9, models, {})
        planner.plan(view)
        for d in planner.explain(view):
            fc = planner._states[d.model].forecast
            ages = [h / 2 for h in range(120) if fc.daily(now - h / 2)
                    == (d.requests_per_day, d.cold_starts_per_day_if_lazy)]
            assert ages, (d.model, now)  # as of a time within the last minute
    fc = planner._states["a"].forecast
    view = ClusterView(start + 299.0, 1e9, models, {})
    planner.plan(view)
    before = next(d for d in planner.explain(view) if d.model == "a")
    planner.observe("a", start + 300.0)
    view = ClusterView(start + 300.0, 1e9, models, {})
    planner.plan(view)
    a = next(d for d in planner.explain(view) if d.model == "a")
    # read again at once (as of its time in the period, which the request counts in)
    assert a.requests_per_day > before.requests_per_day
    assert any(fc.daily(start + 300.0 - h / 2) == (a.requests_per_day,
                                                   a.cold_starts_per_day_if_lazy)
               for h in range(120))
