"""Replay a trace through the autoscaler (:mod:`controlplane.policy.autoscale`) with instances
joining and leaving, to compare how new instances join.

Each strategy runs the same :class:`~controlplane.policy.autoscale.Autoscaler` every
``options.interval_s`` and the same replica plan (:func:`plan_replicas`); they differ in what the
decisions read and in how a new instance joins (:data:`STRATEGIES`):

* ``prewarmed`` (ours): decisions read the forecast over the lead time as well as the measured
  load; a new instance boots (``instance_start_s``), loads the models the plan gives it one
  after another, and gets requests only for models ready on it.
* ``reactive``: decisions read the measured load only (an instance is added once it crosses
  ``rate_per_replica`` per replica); a new instance is routed its planned models as soon as it
  has booted, and loads each on its first request there.
* ``unaware``: as reactive, but routing is model-unaware: every booted instance gets its share
  of every model's requests, and loads what it lacks on demand (older instances start with
  every model that fits).

Simplifications, kept the same for all three: requests take no service time (a wait is a wait
for a load; "in flight" are requests waiting for one); no standby (``options.standby`` is set to
0); replicas the plan adds on instances that were there already load in the background. A wait
is *scale-caused* when the load it waits for is on an instance that joined by scale-out while
the model was ready on another serving instance, or brings back a model whose only replica
went with a scale-in. Figures count requests at or after ``measure_from_s`` (earlier ones
teach the forecast).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from controlplane.policy.autoscale_replay import STRATEGIES, Replay, Strategy
from controlplane.policy.autoscale_types import AutoscaleOptions
from controlplane.policy.measured import SeasonalRates
from controlplane.policy.types import ModelProfile

__all__ = ["STRATEGIES", "Strategy", "compare_autoscaling", "format_table", "simulate_autoscaling"]

#: A new instance's time from the decision until it is up, before any model loads (s).
DEFAULT_INSTANCE_START_S = 20.0


def simulate_autoscaling(trace: Sequence[tuple[float, str]], models: Mapping[str, ModelProfile],
                         options: AutoscaleOptions, start_instances: int, strategy: Strategy, *,
                         forecaster: object | None = None,
                         instance_start_s: float = DEFAULT_INSTANCE_START_S,
                         spikes: Sequence[tuple[float, float]] = (),
                         measure_from_s: float = 0.0) -> dict[str, Any]:
    """Replay ``trace`` (sorted ``(seconds, model)`` rows) under ``strategy``; the figures of
    :func:`compare_autoscaling` for it. ``forecaster``: what :func:`forecast_ahead` reads (it
    is told every request through its ``observe(model, t)``, so it learns only the past)."""
    if not start_instances >= options.min_instances:
        raise ValueError(f"start_instances ({start_instances}) is below min_instances "
                         f"({options.min_instances})")
    if instance_start_s < 0:
        raise ValueError(f"instance_start_s must be >= 0, got {instance_start_s}")
    unknown = {m for _, m in trace} - set(models)
    if unknown:
        raise ValueError(f"trace has unknown models: {', '.join(sorted(unknown))}")
    run = Replay(strategy, models, replace(options, standby=0), start_instances,
                 instance_start_s, forecaster)
    counts: dict[str, int] = {}
    for _, m in trace:
        counts[m] = counts.get(m, 0) + 1
    run.seed(counts)
    next_tick = 0.0
    waits: list[tuple[float, float, bool]] = []  # (time, wait, scale-caused)
    for t, model in trace:
        while next_tick <= t:
            run.tick(next_tick)
            next_tick += options.interval_s
        wait, caused = run.request(t, model)
        if t >= measure_from_s:
            waits.append((t, wait, caused))
    end = trace[-1][0] if trace else 0.0
    return _summary(strategy, run, waits, spikes, measure_from_s, end)


def compare_autoscaling(trace: Sequence[tuple[float, str]], models: Mapping[str, ModelProfile],
                        instance_budget_mb: float | None, options: AutoscaleOptions,
                        start_instances: int, *, cycle_s: float | None = None,
                        forecast_bin_s: float | None = None,
                        forecaster: Callable[[], object] | None = None,
                        instance_start_s: float = DEFAULT_INSTANCE_START_S,
                        spikes: Sequence[tuple[float, float]] = (),
                        measure_from_s: float | None = None,
                        strategies: Sequence[str] = tuple(STRATEGIES)) -> dict[str, Any]:
    """Run each of ``strategies`` on the same trace and options; JSON-able results.

    The forecast is a fresh ``forecaster()`` per strategy (e.g. a planner policy), else, with
    ``cycle_s`` (the trace's period, e.g. a compressed day), :class:`SeasonalRates` over bins
    of ``forecast_bin_s`` (default ``cycle_s / 48``), else none. Figures count from
    ``measure_from_s`` (default: one cycle, which the seasonal forecast learns from; else 0).
    ``spikes``: ``(start, end)`` windows whose waits are reported apart from the steady ones.

    Returns ``{"options": ..., "results": {strategy: figures}}``; per strategy: ``requests``,
    ``waited`` and ``scale_waits`` (requests that waited for a load, and those a scale event
    caused), ``spike`` / ``steady`` (requests, waited, p50 and p99 wait in s),
    ``instance_seconds``, ``max_instances``, ``scale_events`` (each decision that acted, with
    its time and reasons) and ``decision_to_first_request_s`` (per instance added).
    Raises ValueError on unknown strategies or models, or bad numbers.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    options = replace(options, instance_budget_mb=instance_budget_mb)
    if measure_from_s is None:
        measure_from_s = cycle_s if cycle_s is not None and forecaster is None else 0.0

    def make() -> object | None:
        if forecaster is not None:
            return forecaster()
        if cycle_s is None:
            return None
        return SeasonalRates(cycle_s, forecast_bin_s or cycle_s / 48)

    results = {name: simulate_autoscaling(
        trace, models, options, start_instances, STRATEGIES[name], forecaster=make(),
        instance_start_s=instance_start_s, spikes=spikes, measure_from_s=measure_from_s)
        for name in strategies}
    return {"options": {"start_instances": start_instances,
                        "min_instances": options.min_instances,
                        "max_instances": options.max_instances,
                        "rate_per_replica": options.rate_per_replica,
                        "instance_budget_mb": instance_budget_mb,
                        "interval_s": options.interval_s,
                        "lead_margin_s": options.lead_margin_s,
                        "instance_start_s": instance_start_s, "cycle_s": cycle_s,
                        "measure_from_s": measure_from_s,
                        "spikes": [list(w) for w in spikes]},
            "results": results}


def _summary(strategy: Strategy, run: Replay, waits: Sequence[tuple[float, float, bool]],
             spikes: Sequence[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    def in_spike(t: float) -> bool:
        return any(a <= t < b for a, b in spikes)

    used = math.fsum(max(0.0, min(i.retire, end) - max(i.started, start))
                     for i in run.instances)
    added = [i for i in run.instances if i.by_scale]
    return {
        "strategy": strategy.name, "forecast": strategy.forecast, "join": strategy.join,
        "requests": len(waits),
        "waited": sum(1 for _, w, _ in waits if w > 0),
        "scale_waits": sum(1 for _, w, c in waits if w > 0 and c),
        "spike": _waits([w for t, w, _ in waits if in_spike(t)]),
        "steady": _waits([w for t, w, _ in waits if not in_spike(t)]),
        "instance_seconds": round(used, 3),
        "max_instances": _most_at_once(run),
        "scale_events": run.events,
        "decision_to_first_request_s": [
            {"instance": i.name, "decided_at": i.started,
             "first_request_s": None if i.first_request is None
             else round(i.first_request - i.started, 3)} for i in added],
    }


def _waits(values: list[float]) -> dict[str, Any]:
    """Count, waited, and nearest-rank p50/p99 of ``values`` (zeros included)."""
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0

    return {"requests": len(values), "waited": sum(1 for v in values if v > 0),
            "p50_wait_s": round(rank(0.5), 4), "p99_wait_s": round(rank(0.99), 4)}


def _most_at_once(run: Replay) -> int:
    """Most instances started and not retired at once."""
    marks = sorted([(i.started, 1) for i in run.instances]
                   + [(i.retire, -1) for i in run.instances if math.isfinite(i.retire)],
                   key=lambda m: (m[0], m[1]))
    most = now = 0
    for _, step in marks:
        now += step
        most = max(most, now)
    return most


def format_table(compared: Mapping[str, Any]) -> str:
    """:func:`compare_autoscaling`'s results as a text table, then each strategy's scale
    events (time, action, count, target)."""
    lines = [f"{'STRATEGY':<10} {'REQUESTS':>9} {'WAITED':>7} {'SCALE':>6} {'SPIKE P50':>10} "
             f"{'SPIKE P99':>10} {'STEADY P99':>11} {'INST*s':>9} {'MAX':>4} {'TO 1ST REQ':>11}"]
    for name, r in compared["results"].items():
        firsts = [f["first_request_s"] for f in r["decision_to_first_request_s"]
                  if f["first_request_s"] is not None]
        first = f"{sum(firsts) / len(firsts):.1f}s" if firsts else "-"
        lines.append(f"{name:<10} {r['requests']:>9} {r['waited']:>7} {r['scale_waits']:>6} "
                     f"{r['spike']['p50_wait_s']:>9.2f}s {r['spike']['p99_wait_s']:>9.2f}s "
                     f"{r['steady']['p99_wait_s']:>10.2f}s {r['instance_seconds']:>9.0f} "
                     f"{r['max_instances']:>4} {first:>11}")
    for name, r in compared["results"].items():
        events = ", ".join(f"{e['at']:g}s {e['action']} {e['count']} (-> {e['target_instances']})"
                           for e in r["scale_events"])
        lines.append(f"{name}: {events or 'no scale events'}")
    return "\n".join(lines)
