"""Types shared by the residency policies, the trace simulator and the live driver.

A policy is a pure, synchronous object: it never reads a clock or does I/O. The driver (the live
scheduler or :mod:`controlplane.policy.simulator`) passes time in explicitly as float seconds and
applies the actions the policy returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

MB_PER_GB = 1024.0


@dataclass(frozen=True)
class ModelProfile:
    name: str
    memory_mb: float
    #: Seconds from the start of a load until the model serves requests.
    load_s: float
    #: Always loaded, never unloaded.
    pinned: bool = False

    @property
    def memory_gb(self) -> float:
        return self.memory_mb / MB_PER_GB


class Residency(StrEnum):
    COLD = "cold"
    LOADING = "loading"
    READY = "ready"


ActionKind = Literal["load", "unload"]


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    model: str
    #: Human-readable why, shown by the admin API.
    reason: str


@dataclass(frozen=True)
class ClusterView:
    """What a policy sees at a decision point."""

    now: float
    budget_mb: float
    models: Mapping[str, ModelProfile]
    #: Models absent from the mapping are COLD.
    residency: Mapping[str, Residency]

    def state(self, model: str) -> Residency:
        return self.residency.get(model, Residency.COLD)

    def resident_mb(self) -> float:
        """Memory held by READY and LOADING models (a load holds its memory from its start)."""
        total = 0.0
        for name, state in self.residency.items():
            if state is not Residency.COLD:
                profile = self.models.get(name)
                if profile is not None:
                    total += profile.memory_mb
        return total


class Policy(Protocol):
    name: str

    def observe(self, model: str, t: float) -> None:
        """A request for ``model`` arrived at ``t``; calls come in time order, possibly in
        batches that lag the last :meth:`plan` call a little."""

    def on_demand(self, model: str, view: ClusterView) -> list[Action]:
        """A request arrived for a COLD model, which the driver loads right after this call;
        return the unloads that make room (never pinned or LOADING models)."""

    def plan(self, view: ClusterView) -> list[Action]:
        """Timed decision: preloads and unloads. The driver applies unloads before loads."""

    def next_wakeup(self, now: float) -> float | None:
        """Absolute time at which :meth:`plan` wants to be called next, or None."""


EventKind = Literal["load_start", "ready", "unload"]
EVENT_KINDS: tuple[EventKind, ...] = ("load_start", "ready", "unload")


@dataclass(frozen=True)
class Event:
    """A residency change in a simulation (one row of EVENTS.csv)."""

    time: float
    model: str
    kind: EventKind


@dataclass(frozen=True)
class Metrics:
    """The figures a simulation is judged by; all of them can be recomputed from the trace,
    the models and the events (see :mod:`controlplane.policy.scoring`)."""

    requests: int
    cold_starts: int
    cold_start_rate: float
    #: Nearest-rank 99th percentile of per-request wait, warm requests waiting 0.
    p99_wait_s: float
    mean_wait_s: float
    #: Sum over residency intervals (load start to unload, or to the last request) of GB * s.
    memory_gb_s: float
    #: Load starts after which the resident memory exceeded the budget.
    budget_violations: int


#: the policy's decisions, plus what the live lifecycle imposes over them (``disabled``,
#: ``held cold`` by an operator's unload, ``failed`` while a load backs off)
DecisionKind = Literal["pinned", "keep", "preload", "unload", "lazy", "disabled", "held cold",
                       "failed"]


@dataclass(frozen=True, slots=True)
class ModelDecision:
    """One model's line in a policy explanation (the admin API shows these)."""

    model: str
    requests_per_day: float
    #: Cold starts a day if the model were loaded on demand and dropped after 10 idle minutes.
    cold_starts_per_day_if_lazy: float
    #: Cost of holding the model all day, in GB*h per day.
    warm_cost_gbh_per_day: float
    decision: DecisionKind
    #: For ``preload``: when the load is planned to start (policy time).
    preload_at: float | None
    why: str


@dataclass(frozen=True)
class PolicySpec:
    """A policy name with the meaning of its one parameter, for help texts and the bench."""

    name: str
    description: str
    param_meaning: str
    default_param: float | None
    #: Parameter values the bench sweeps to draw the policy's cost/cold-start frontier.
    sweep: tuple[float | None, ...]
