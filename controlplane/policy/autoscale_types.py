"""What the autoscaler (:mod:`controlplane.policy.autoscale`) takes and returns.

All times are float seconds on the caller's clock (the live control plane's wall clock, the
simulator's trace time, or a fake clock in tests); rates are requests per second; memory is MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from controlplane.config import AutoscalerSettings, FleetSettings

ScalingAction = Literal["scale_out", "scale_in", "promote_standby", "none"]


@dataclass(frozen=True)
class AutoscaleOptions:
    """The autoscaler's knobs (``[autoscaler]`` plus what it reads of ``[fleet]``)."""

    min_instances: int
    max_instances: int
    #: instances kept started and warm outside routing
    standby: int
    #: no scale-out within this long of the last scale-out or promotion (s)
    scale_out_cooldown_s: float
    #: no scale-in within this long of any scale event (s)
    scale_in_cooldown_s: float
    #: saturated above this many requests in flight per serving replica
    max_in_flight_per_replica: float
    #: saturated when a model's recent p50 is above this times its steady p50
    latency_ratio: float
    #: how far beyond the start-to-warm time the forecast is read (s)
    lead_margin_s: float
    #: start-to-warm time assumed before one was measured (s)
    default_warm_up_s: float
    #: requests/s one replica carries (``fleet.replica_rate_per_s``)
    rate_per_replica: float
    #: memory one new instance holds for models (MB); None: unlimited
    instance_budget_mb: float | None
    #: at most this many replicas of a model (``fleet.max_replicas``; 0: one per instance)
    max_replicas: int = 0
    #: seconds between decisions (the simulator ticks at this period; live reads the setting)
    interval_s: float = 5.0
    #: the window measured rates are taken over (``fleet.measured_rate_window_s``)
    measured_window_s: float = 60.0
    #: decisions kept in :attr:`Autoscaler.history`
    history_size: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.min_instances <= self.max_instances:
            raise ValueError(f"need 1 <= min_instances <= max_instances, got "
                             f"{self.min_instances} and {self.max_instances}")
        if self.standby < 0 or self.max_replicas < 0 or self.history_size < 1:
            raise ValueError("standby and max_replicas must be >= 0, history_size >= 1")
        for name in ("scale_out_cooldown_s", "scale_in_cooldown_s", "lead_margin_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_in_flight_per_replica", "default_warm_up_s", "rate_per_replica",
                     "interval_s", "measured_window_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if not self.latency_ratio > 1:
            raise ValueError(f"latency_ratio must be above 1, got {self.latency_ratio}")
        if self.instance_budget_mb is not None and not self.instance_budget_mb > 0:
            raise ValueError(f"instance_budget_mb must be positive, got "
                             f"{self.instance_budget_mb}")

    @classmethod
    def of(cls, autoscaler: AutoscalerSettings, fleet: FleetSettings,
           instance_budget_mb: float | None) -> AutoscaleOptions:
        """Options from the settings; ``instance_budget_mb``: the model memory of one instance
        the autoscaler would add (its template's budget), None when unlimited."""
        return cls(
            min_instances=autoscaler.min_instances, max_instances=autoscaler.max_instances,
            standby=autoscaler.standby, scale_out_cooldown_s=autoscaler.scale_out_cooldown_s,
            scale_in_cooldown_s=autoscaler.scale_in_cooldown_s,
            max_in_flight_per_replica=autoscaler.max_in_flight_per_replica,
            latency_ratio=autoscaler.latency_ratio, lead_margin_s=autoscaler.lead_margin_s,
            default_warm_up_s=autoscaler.default_warm_up_s,
            rate_per_replica=fleet.replica_rate_per_s, instance_budget_mb=instance_budget_mb,
            max_replicas=fleet.max_replicas, interval_s=autoscaler.interval_s,
            measured_window_s=fleet.measured_rate_window_s)


@dataclass(frozen=True)
class ModelLoad:
    """One model's demand at a decision."""

    model: str
    memory_mb: float
    #: the forecast's rate now (requests/s)
    forecast_rate_per_s: float
    #: the forecast's highest rate over [now, now + lead] (requests/s)
    forecast_ahead_per_s: float
    #: measured over the recent window (requests/s)
    measured_rate_per_s: float
    #: requests in flight now
    in_flight: int
    #: serving replicas now
    replicas: int
    #: recent latency p50 (s), None when not measured
    p50_recent_s: float | None = None
    #: the model's steady latency p50 (s), None when not known
    p50_steady_s: float | None = None
    pinned: bool = False


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at a decision: instance counts by state, and each model's demand."""

    #: seconds (any epoch)
    now: float
    serving: int
    warming: int
    standby: int
    draining: int
    models: tuple[ModelLoad, ...]
    #: replicas the replica plan could not place within budgets
    unplaced: int = 0
    #: measured start-to-warm time of an instance (p90, s); None if never measured
    warm_up_s: float | None = None


@dataclass(frozen=True)
class ScalingDecision:
    """What the autoscaler decided at ``at``, and why."""

    at: float
    action: ScalingAction
    #: instances to add / remove / promote (0 with ``none``)
    count: int
    #: standby instances to keep (the live side starts or retires them to match)
    standby_wanted: int
    #: human-readable, each with its numbers
    reasons: tuple[str, ...]
    #: serving instances wanted
    target_instances: int

    def as_dict(self) -> dict[str, object]:
        """JSON-able form (``GET /scaling``, the simulator's output)."""
        return {"at": self.at, "action": self.action, "count": self.count,
                "standby_wanted": self.standby_wanted, "target_instances": self.target_instances,
                "reasons": list(self.reasons)}
