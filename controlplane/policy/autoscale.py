"""Pure autoscaling decisions: how many instances the fleet wants, ahead of the forecast.

No clock, no I/O: the caller passes a :class:`FleetSnapshot` (its ``now`` on any clock) and gets
a :class:`ScalingDecision`; the live control plane and the simulator
(:mod:`controlplane.policy.autoscale_sim`) run this same code. Rules, per decision:

* **Replicas per model** = ``ceil(max(forecast ahead, measured) / rate_per_replica)``, at least 1
  for a model with demand (any forecast or measured rate, a request in flight, or pinned),
  capped by ``max_instances`` (and ``max_replicas`` when set). "Forecast ahead" is the highest
  forecast rate over ``[now, now + lead]``, the lead being the measured start-to-warm time (or
  ``default_warm_up_s``) plus ``lead_margin_s``: an instance started now is warm before the
  peak it is for, and one is not started earlier than that.
* **Instances** = the most of ``min_instances``, the largest replica count (a model has at most
  one replica per instance), and ``ceil(memory of the wanted replicas / instance_budget_mb)``.
* **Saturation**: requests in flight per serving replica above ``max_in_flight_per_replica``,
  or a recent p50 above ``latency_ratio`` times the steady p50, asks for one instance more than
  serve; so do replicas the plan could not place (``unplaced``).
* **Scale-out** when the target is above serving + warming: standby instances are promoted
  first (``promote_standby``), else instances are started (``scale_out``). None within
  ``scale_out_cooldown_s`` of the last, except a promotion when saturated (a standby is warm,
  so using it at once costs no load on the request path).
* **Scale-in**, one instance at a time, when the target is below serving: the target is the
  maximum of the forecast's and the measured load's needs, so both allow it; never within
  ``scale_in_cooldown_s`` of any scale event.
* Never below ``min_instances`` or above ``max_instances``; a cap is said in the reasons.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controlplane.policy.autoscale_types import (
    AutoscaleOptions,
    FleetSnapshot,
    ModelLoad,
    ScalingAction,
    ScalingDecision,
)
from controlplane.policy.forecast import ModelForecast
from controlplane.policy.patterns import DAY_S

__all__ = ["AutoscaleOptions", "Autoscaler", "FleetSnapshot", "ModelLoad", "ScalingDecision",
           "forecast_ahead"]

#: Model lines in a decision's reasons (the neediest first); the rest are counted.
_MAX_MODEL_REASONS = 5


@dataclass(frozen=True)
class _Need:
    target: int
    #: instances the forecast alone and the measured load alone would need
    by_forecast: int
    by_measured: int
    saturated: bool
    reasons: tuple[str, ...]


class Autoscaler:
    """Decides scale-out, scale-in and promotions (module docstring); keeps its cooldowns and
    a bounded history. Not thread-safe: one caller decides at a time."""

    def __init__(self, options: AutoscaleOptions) -> None:
        self.options = options
        self._acted: deque[ScalingDecision] = deque(maxlen=options.history_size)
        self._latest_none: ScalingDecision | None = None
        self._last_out: float | None = None
        self._last_event: float | None = None

    @property
    def history(self) -> Sequence[ScalingDecision]:
        """Decisions that did something (at most ``history_size``), then the latest ``none``
        when it is newer; oldest first."""
        out = list(self._acted)
        if self._latest_none is not None:
            out.append(self._latest_none)
        return out

    def lead_for(self, warm_up_s: float | None) -> float:
        """Seconds ahead the forecast is read: ``warm_up_s`` (else ``default_warm_up_s``)
        plus ``lead_margin_s``. The live side needs it before it has a snapshot."""
        warm = warm_up_s if warm_up_s is not None else self.options.default_warm_up_s
        return warm + self.options.lead_margin_s

    def lead_s(self, snap: FleetSnapshot) -> float:
        return self.lead_for(snap.warm_up_s)

    def decide(self, snap: FleetSnapshot) -> ScalingDecision:
        """The decision at ``snap.now``; records it (cooldowns, history)."""
        need = self._needed(snap)
        o = self.options
        action, count, why = self._action(snap, need)
        standby = max(0, min(o.standby, o.max_instances - need.target))
        decision = ScalingDecision(snap.now, action, count, standby, (why, *need.reasons),
                                   need.target)
        if action == "none":
            self._latest_none = decision
        else:
            self._acted.append(decision)
            self._latest_none = None
            self._last_event = snap.now
            if action != "scale_in":
                self._last_out = snap.now
        return decision

    def _needed(self, snap: FleetSnapshot) -> _Need:
        """Serving instances wanted, with the numbers behind it (module docstring)."""
        o = self.options
        cap = min(o.max_instances, o.max_replicas or o.max_instances)
        lead = self.lead_s(snap)
        warm = snap.warm_up_s if snap.warm_up_s is not None else o.default_warm_up_s
        both: dict[str, int] = {}
        forecast: dict[str, int] = {}
        measured: dict[str, int] = {}
        uncapped = 0  # the most replicas a model asks for, before the caps
        for m in snap.models:
            f = self._replicas(m.forecast_ahead_per_s, m.forecast_ahead_per_s > 0 or m.pinned)
            r = self._replicas(m.measured_rate_per_s,
                               m.measured_rate_per_s > 0 or m.in_flight > 0 or m.pinned)
            uncapped = max(uncapped, f, r)
            forecast[m.model], measured[m.model] = min(f, cap), min(r, cap)
            both[m.model] = min(max(f, r), cap)
        memory = {m.model: m.memory_mb for m in snap.models}
        by_both = self._instances(both, memory)
        target = max(o.min_instances, by_both)
        reasons = self._model_reasons(snap.models, both, lead, warm)
        if o.instance_budget_mb is not None and by_both > max(both.values(), default=0):
            total = sum(n * memory[name] for name, n in both.items())
            reasons.append(f"memory: {total:.0f} MB of wanted replicas needs {by_both} "
                           f"instance(s) of {o.instance_budget_mb:.0f} MB")
        saturated = False
        for m in snap.models:
            said = _saturation(m, o)
            if said:
                saturated = True
                reasons.append(said)
        if saturated:
            target = max(target, snap.serving + 1)
        if snap.unplaced > 0:
            target = max(target, snap.serving + 1)
            reasons.append(f"{snap.unplaced} replica(s) could not be placed within the "
                           "instances' budgets: one more instance")
        if max(target, uncapped) > o.max_instances:
            reasons.append(f"capped at max_instances {o.max_instances} (wanted "
                           f"{max(target, uncapped)})")
            target = min(target, o.max_instances)
        if target == o.min_instances and by_both < o.min_instances:
            reasons.append(f"at least min_instances {o.min_instances} (load needs {by_both})")
        return _Need(target, max(o.min_instances, self._instances(forecast, memory)),
                     max(o.min_instances, self._instances(measured, memory)), saturated,
                     tuple(reasons))

    # -- internals -------------------------------------------------------------------------

    def _replicas(self, rate: float, demand: bool) -> int:
        n = math.ceil(rate / self.options.rate_per_replica - 1e-9) if rate > 0 else 0
        return max(n, 1) if demand else 0

    def _instances(self, replicas: dict[str, int], memory: dict[str, float]) -> int:
        most = max(replicas.values(), default=0)
        budget = self.options.instance_budget_mb
        if budget is None:
            return most
        total = sum(n * memory[name] for name, n in replicas.items())
        return max(most, math.ceil(total / budget - 1e-9))

    def _action(self, snap: FleetSnapshot, need: _Need) -> tuple[ScalingAction, int, str]:
        o = self.options
        have = snap.serving + snap.warming
        state = (f"target {need.target} instance(s): {snap.serving} serve, {snap.warming} "
                 f"warming, {snap.standby} standby")
        if need.target > have:
            want = need.target - have
            if snap.standby > 0 and need.saturated:
                n = min(want, snap.standby)
                return "promote_standby", n, f"{state}; saturated: promote {n} standby at once"
            since = None if self._last_out is None else snap.now - self._last_out
            if since is not None and since < o.scale_out_cooldown_s:
                return "none", 0, (f"{state}; {want} more wanted, but the last scale-out was "
                                   f"{since:.0f} s ago (cooldown {o.scale_out_cooldown_s:.0f} "
                                   f"s, {o.scale_out_cooldown_s - since:.0f} s left)")
            if snap.standby > 0:
                n = min(want, snap.standby)
                return "promote_standby", n, f"{state}: promote {n} standby"
            return "scale_out", want, f"{state}: start {want}"
        if need.target < snap.serving:
            allow = (f"the forecast ahead needs {need.by_forecast} and the measured load "
                     f"{need.by_measured}, both below the {snap.serving} serving")
            since = None if self._last_event is None else snap.now - self._last_event
            if since is not None and since < o.scale_in_cooldown_s:
                return "none", 0, (f"{state}; {allow}, but the last scale event was "
                                   f"{since:.0f} s ago (cooldown {o.scale_in_cooldown_s:.0f} "
                                   f"s, {o.scale_in_cooldown_s - since:.0f} s left)")
            return "scale_in", 1, f"{state}; {allow}: drain 1"
        return "none", 0, f"{state}: enough"

    def _model_reasons(self, models: Sequence[ModelLoad], need: dict[str, int], lead: float,
                       warm: float) -> list[str]:
        wanting = sorted((m for m in models if need[m.model] > 0),
                         key=lambda m: (-need[m.model], m.model))
        out = [f"{m.model}: forecast {m.forecast_ahead_per_s:.1f}/s within the {lead:.0f} s "
               f"lead (warm-up {warm:.0f} s + margin {self.options.lead_margin_s:.0f} s), "
               f"{m.forecast_rate_per_s:.1f}/s now, measured {m.measured_rate_per_s:.1f}/s: "
               f"needs {need[m.model]} replica(s) at {self.options.rate_per_replica:g}/s each, "
               f"{m.replicas} serve" for m in wanting[:_MAX_MODEL_REASONS]]
        if len(wanting) > _MAX_MODEL_REASONS:
            out.append(f"... and {len(wanting) - _MAX_MODEL_REASONS} more model(s) with demand")
        return out


def _saturation(m: ModelLoad, o: AutoscaleOptions) -> str | None:
    """Why ``m`` is saturated, or None."""
    per = m.in_flight / max(1, m.replicas)
    if per > o.max_in_flight_per_replica:
        return (f"{m.model}: saturated, {m.in_flight} in flight on {m.replicas} replica(s) "
                f"({per:.1f} each, above {o.max_in_flight_per_replica:g})")
    if (m.p50_recent_s is not None and m.p50_steady_s is not None and m.p50_steady_s > 0
            and m.p50_recent_s > o.latency_ratio * m.p50_steady_s):
        return (f"{m.model}: saturated, p50 {m.p50_recent_s * 1000:.0f} ms against "
                f"{m.p50_steady_s * 1000:.0f} ms steady (above {o.latency_ratio:g}x)")
    return None


def forecast_ahead(policy: object, model: str, now: float, horizon_s: float) -> float | None:
    """Highest rate (requests/s) ``policy`` expects for ``model`` over ``[now, now +
    horizon_s]``; None when the policy has no forecast.

    * An object with ``rate_ahead(model, now, horizon_s) -> float | None`` answers itself
      (:class:`controlplane.policy.measured.SeasonalRates`, fakes in tests).
    * A policy with ``forecast(model) -> ModelForecast | None`` (the planner, ``ours``): the
      most of the hazard now (the rate expected given the silence so far) and, at every
      time-of-day bin the horizon touches, that bin's factor times the day-long rate (factor
      1 until the profile has half a day of evidence); a periodic model whose next fire falls
      in the horizon counts at least one fire per period. 0.0 for a model it has not seen.

    It reads the forecast only, but the planner's profiles fold completed bins in as time
    passes, so live it must run where the policy's other calls run (its thread).
    """
    rate_ahead = getattr(policy, "rate_ahead", None)
    if callable(rate_ahead):
        found = rate_ahead(model, now, horizon_s)
        return None if found is None else float(found)
    forecast_of: Callable[[str], object] | None = getattr(policy, "forecast", None)
    if not callable(forecast_of):
        return None
    fc = forecast_of(model)
    if fc is None:
        return 0.0
    if not isinstance(fc, ModelForecast):
        return None
    horizon = max(0.0, horizon_s)
    best = fc.hazard_now(now)
    bin_s = DAY_S / len(fc.time_of_day_rates(now))
    mean = fc.rate_long(now)
    # A sample every bin width, plus the horizon's end, touches every bin the horizon overlaps.
    samples = [now + k * bin_s for k in range(int(horizon // bin_s) + 1)] + [now + horizon]
    best = max(best, max(fc.time_of_day_factor(t, now) * mean for t in samples))
    fire, found = fc.predicted_next(now), fc.periodicity()
    if fire is not None and found is not None and now <= fire <= now + horizon:
        best = max(best, 1.0 / found.period_s)
    return best
