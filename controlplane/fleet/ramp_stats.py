"""A replica's recent outcomes against its peers': the figures the traffic ramp pauses on.

Kept apart from ``ramp.py`` so that the rule -- what "worse than its peers" means -- reads
(and is tested) on its own: an error rate above the peers' by a margin, or a p50 latency
over a factor of theirs, each only once both sides have enough outcomes to say so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

#: one request's outcome: (latency in seconds, None when unknown; whether it succeeded)
Outcome: TypeAlias = tuple[float | None, bool]
#: a replica's most recent outcomes (bounded: ``deque(maxlen=...)``)
Window: TypeAlias = deque[Outcome]

#: a p50 this close to the peers' (seconds) is not worse, whatever the ratio: below a few
#: milliseconds the difference is the event loop's scheduling, not the replica
LATENCY_SLACK_S = 0.002


@dataclass(frozen=True)
class Stats:
    """Outcomes pooled over one or more windows. ``error_rate`` (0..1) is None below the
    minimum of outcomes, ``p50_s`` (seconds, successful requests with a known latency only)
    below the minimum of such latencies."""

    samples: int
    error_rate: float | None
    p50_s: float | None


NONE = Stats(0, None, None)


def summarize(windows: Iterable[Iterable[Outcome]], min_samples: int) -> Stats:
    """The pooled figures of ``windows``; O(outcomes), run once per ramp per tick."""
    n = errors = 0
    latencies: list[float] = []
    for window in windows:
        for latency, ok in window:
            n += 1
            if not ok:
                errors += 1
            elif latency is not None:
                latencies.append(latency)
    p50 = None
    if len(latencies) >= min_samples:
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
    return Stats(n, errors / n if n >= min_samples else None, p50)


def worse(mine: Stats, peers: Stats, error_margin: float, latency_factor: float) -> str | None:
    """Why ``mine`` does worse than ``peers``, in words; None when it does not, or when
    either side lacks the outcomes to tell."""
    if (mine.error_rate is not None and peers.error_rate is not None
            and mine.error_rate > peers.error_rate + error_margin):
        return (f"error rate {mine.error_rate:.1%} against its peers' "
                f"{peers.error_rate:.1%} (over {mine.samples} and {peers.samples} requests)")
    if (mine.p50_s is not None and peers.p50_s is not None
            and mine.p50_s > latency_factor * peers.p50_s
            and mine.p50_s - peers.p50_s > LATENCY_SLACK_S):
        return (f"p50 latency {mine.p50_s * 1000:.1f} ms against its peers' "
                f"{peers.p50_s * 1000:.1f} ms (more than {latency_factor:g}x)")
    return None
