"""Live comparison of a rollout's two versions on the requests they serve.

Fed each request's outcome (the recorder's ``on_observation`` hook; the observation names
the version that served it, ``serving/versions.py``), for models with a rollout shifting
only. Per (model, version) the outcomes since the current step began, bounded to the last
``WINDOW``: errors that are the version's (not the client's: ``REPLICA_ERRORS``) and
latencies. :func:`regression` says whether the target does worse than the active version
beyond the rollout's bounds.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from controlplane.fleet.ramp import REPLICA_ERRORS
from controlplane.traffic.observation import OK, Observation

#: outcomes kept per (model, version)
WINDOW = 2000
#: a target this much slower in absolute terms is never a regression (tiny models jitter)
LATENCY_FLOOR_S = 0.002


@dataclass
class VersionStats:
    requests: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        self.latencies: deque[float] = deque(maxlen=WINDOW)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p50_s(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None


class RolloutWatch:
    def __init__(self) -> None:
        #: model -> version -> stats of the current step
        self.stats: dict[str, dict[str, VersionStats]] = {}

    def follow(self, model: str) -> None:
        """Start (or restart, at a new step) counting ``model``'s outcomes."""
        self.stats[model] = {}

    def forget(self, model: str) -> None:
        self.stats.pop(model, None)

    def observation(self, o: Observation) -> None:
        by_version = self.stats.get(o.model)
        if by_version is None or not o.version:
            return
        found = by_version.get(o.version)
        if found is None:
            found = by_version[o.version] = VersionStats()
        if o.outcome != OK and o.outcome not in REPLICA_ERRORS:
            return  # the client's own mistake says nothing of the version
        found.requests += 1
        if o.outcome != OK:
            found.errors += 1
        elif o.latency_s is not None:
            found.latencies.append(o.latency_s - (o.wait_s or 0.0))

    def of(self, model: str, version: str) -> VersionStats:
        return self.stats.get(model, {}).get(version) or VersionStats()


def regression(active: VersionStats, target: VersionStats, *, max_error_rate: float,
               latency_factor: float, min_requests: int) -> str | None:
    """Why the target does worse than the active version now; None while it does not (or
    has served fewer than ``min_requests``)."""
    if target.requests < min_requests:
        return None
    if target.error_rate > active.error_rate + max_error_rate:
        return (f"error rate {target.error_rate:.1%} over {target.requests} requests against "
                f"the active version's {active.error_rate:.1%} (bound +{max_error_rate:.1%})")
    t, a = target.p50_s, active.p50_s
    if t is not None and a is not None and active.requests >= min_requests \
            and t > latency_factor * a and t - a > LATENCY_FLOOR_S:
        return (f"p50 latency {t * 1000:.1f} ms against the active version's "
                f"{a * 1000:.1f} ms (bound {latency_factor:g}x)")
    return None
