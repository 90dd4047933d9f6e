"""Small trace builders for the policy tests."""

from __future__ import annotations

import random


def periodic_trace(model: str, period_s: float, hours: float, *, jitter_s: float = 0.0,
                   start_s: float = 7.0, seed: int = 0) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    out = []
    t = start_s
    while t < hours * 3600:
        out.append((max(0.0, t + rng.uniform(-jitter_s, jitter_s)), model))
        t += period_s
    return sorted(out)


def poisson_times(rate_per_s: float, start: float, end: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    out = []
    t = start + rng.expovariate(rate_per_s)
    while t < end:
        out.append(t)
        t += rng.expovariate(rate_per_s)
    return out
