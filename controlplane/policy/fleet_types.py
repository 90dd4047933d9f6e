"""Types of a fleet simulation: events that name the instance, and the figures per instance."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from controlplane.policy.types import EventKind, Metrics


@dataclass(frozen=True)
class FleetEvent:
    """A replica's residency change (one row of a fleet EVENTS.csv)."""

    time: float
    model: str
    kind: EventKind
    instance: str


@dataclass(frozen=True)
class FleetMetrics:
    """A fleet simulation's figures; every one can be recomputed from the trace, the models,
    the instances' budgets and the events (:mod:`controlplane.policy.fleet_scoring`)."""

    #: Fleet-wide: a request is warm when any replica of its model is READY; memory counts
    #: every replica; budget violations are summed over the instances.
    total: Metrics
    #: instance -> GB * s held there (load start to unload, or to the last request).
    memory_gb_s: Mapping[str, float]
    #: instance -> load starts after which that instance's memory exceeded its budget.
    budget_violations: Mapping[str, int]
    #: model -> replica-seconds / the run's length (0 to the last request).
    mean_replicas: Mapping[str, float]
    #: model -> most replicas resident (or loading) at once.
    max_replicas: Mapping[str, int]

    def summary(self) -> dict[str, object]:
        m = self.total
        return {
            "requests": m.requests, "cold_starts": m.cold_starts,
            "cold_start_rate": m.cold_start_rate, "p99_wait_s": m.p99_wait_s,
            "mean_wait_s": m.mean_wait_s, "memory_gb_s": m.memory_gb_s,
            "budget_violations": m.budget_violations,
            "instances": {name: {"memory_gb_s": gb_s,
                                 "budget_violations": self.budget_violations.get(name, 0)}
                          for name, gb_s in self.memory_gb_s.items()},
            "replicas": {model: {"mean": round(self.mean_replicas[model], 4),
                                 "max": self.max_replicas.get(model, 0)}
                         for model in sorted(self.mean_replicas)},
        }


def write_fleet_events(path: Path | str, events: Iterable[FleetEvent]) -> None:
    """EVENTS.csv of a fleet run: ``time,model,event,instance``."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("time", "model", "event", "instance"))
        writer.writerows((repr(e.time), e.model, e.kind, e.instance) for e in events)
