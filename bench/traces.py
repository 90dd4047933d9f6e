"""Synthetic request traces for the residency-policy benchmark and tests.

A trace is a list of ``(seconds from start, model)`` rows plus the models' memory and load times.
Popularity is Zipf over the models; each model follows one of five arrival patterns:

* ``periodic``: cron-like fires at a fixed period (30 s .. 4 h) with a little jitter, sometimes a
  small batch of requests per fire;
* ``poisson``: memoryless arrivals at a steady rate;
* ``bursty``: on/off sessions, busy for minutes then silent for tens of minutes to hours;
* ``diurnal``: Poisson with a rate that follows the time of day (trace second 0 is midnight);
* ``rare``: a few requests a day.

Halfway through, some models change regime (another pattern, popularity up or down, going
silent, or appearing for the first time); in the ``regime_change`` shape, besides, the busiest
model goes quiet and a rare one turns hot (:attr:`TraceShape.hot_swap_rate`). Memory sizes are
log-uniform over the shape's range (50 MB .. 5 GB by default) and load times grow with size
(0.5 s .. 60 s, loosely correlated). Everything is seeded.

    python bench/traces.py --shape regime_change --seed 104 --out /tmp/trace
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from controlplane.policy.trace_io import write_models, write_trace
from controlplane.policy.types import ModelProfile

PATTERNS = ("periodic", "poisson", "bursty", "diurnal", "rare")
_CRON_PERIODS_S = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
_DAY_S = 86400.0
Trace = list[tuple[float, str]]
Times = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TraceShape:
    """What kind of traffic a generated trace has."""

    name: str
    seed: int
    n_models: int
    hours: float
    #: Share of models following each pattern.
    mix: Mapping[str, float] = field(default_factory=lambda: {
        "periodic": 0.25, "poisson": 0.25, "bursty": 0.2, "diurnal": 0.15, "rare": 0.15})
    #: Average requests per hour over all non-rare models.
    requests_per_hour: float = 4000.0
    zipf_s: float = 1.1
    #: Share of models whose regime changes halfway through.
    change_fraction: float = 0.25
    #: Number of models pinned (the most popular small ones).
    pinned: int = 0
    #: Memory sizes are log-uniform over this range, in MB.
    memory_mb: tuple[float, float] = (50.0, 5000.0)
    #: Halfway through, the busiest model goes quiet (a rare model's few requests a day) and a
    #: rare one turns hot at this rate, in requests per second (0: no such swap).
    hot_swap_rate: float = 0.0


SHAPES: dict[str, TraceShape] = {
    "mixed": TraceShape("mixed", seed=1, n_models=60, hours=48, requests_per_hour=3000.0,
                        pinned=1),
    "cron_heavy": TraceShape(
        "cron_heavy", seed=2, n_models=40, hours=48, requests_per_hour=2000.0,
        mix={"periodic": 0.45, "poisson": 0.15, "bursty": 0.1, "diurnal": 0.1, "rare": 0.2}),
    "bursty_diurnal": TraceShape(
        "bursty_diurnal", seed=3, n_models=90, hours=48, zipf_s=0.9, requests_per_hour=3000.0,
        mix={"periodic": 0.1, "poisson": 0.15, "bursty": 0.3, "diurnal": 0.3, "rare": 0.15}),
    # Issue 22: the resident set must move halfway through, under a tight budget.
    "regime_change": TraceShape(
        "regime_change", seed=4, n_models=50, hours=48,
        memory_mb=(20.0, 4000.0), hot_swap_rate=0.5),
}


@dataclass(frozen=True)
class Pattern:
    kind: str
    rate: float  # average requests per second
    period_s: float = 0.0
    jitter_s: float = 0.0
    batch: int = 1
    on_mean_s: float = 0.0
    off_mean_s: float = 0.0
    peak_hour: float = 14.0
    amplitude: float = 0.0

    def describe(self) -> str:
        if self.kind == "periodic":
            return f"periodic {self.period_s:.0f}s x{self.batch}"
        if self.kind == "bursty":
            return f"bursty on {self.on_mean_s:.0f}s / off {self.off_mean_s:.0f}s"
        if self.kind == "diurnal":
            return f"diurnal {self.rate * 3600:.1f}/h peak {self.peak_hour:.0f}h"
        if self.rate == 0:
            return "silent"
        return f"{self.kind} {self.rate * 3600:.2f}/h"


def _draw_pattern(rng: np.random.Generator, kind: str, rate: float) -> Pattern:
    if kind == "periodic":
        target = 1.0 / max(rate, 1e-9)
        period = min(_CRON_PERIODS_S, key=lambda p: abs(math.log(p / target)))
        batch = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
        return Pattern(kind, batch / period, period_s=period,
                       jitter_s=float(rng.uniform(0.2, 3.0)), batch=batch)
    if kind == "bursty":
        on = float(rng.uniform(120, 900))
        off = float(rng.uniform(1200, 10800))
        return Pattern(kind, rate, on_mean_s=on, off_mean_s=off)
    if kind == "diurnal":
        return Pattern(kind, rate, peak_hour=float(rng.uniform(10, 18)),
                       amplitude=float(rng.uniform(0.6, 0.95)))
    if kind == "rare":
        return Pattern(kind, float(rng.uniform(1, 6)) / _DAY_S)
    return Pattern(kind, rate)


def _poisson(rng: np.random.Generator, rate: float, t0: float, t1: float) -> Times:
    if rate <= 0 or t1 <= t0:
        return np.empty(0)
    n = int(rng.poisson(rate * (t1 - t0)))
    return np.sort(rng.uniform(t0, t1, n))


def _arrivals(rng: np.random.Generator, p: Pattern, t0: float, t1: float) -> Times:
    if p.rate <= 0:
        return np.empty(0)
    if p.kind == "periodic":
        fires = np.arange(t0 + float(rng.uniform(0, p.period_s)), t1, p.period_s)
        fires = fires + rng.normal(0, p.jitter_s / 2, fires.size).clip(-p.jitter_s, p.jitter_s)
        batch = [fires + float(rng.uniform(0, 3.0)) * k for k in range(p.batch)]
        out = np.concatenate(batch)
        return np.sort(out[(out >= t0) & (out < t1)])
    if p.kind == "bursty":
        parts = []
        busy_rate = min(5.0, p.rate * (p.on_mean_s + p.off_mean_s) / p.on_mean_s)
        t = t0 + float(rng.exponential(p.off_mean_s))
        while t < t1:
            end = min(t1, t + float(rng.exponential(p.on_mean_s)))
            parts.append(_poisson(rng, busy_rate, t, end))
            t = end + float(rng.exponential(p.off_mean_s))
        return np.concatenate(parts) if parts else np.empty(0)
    if p.kind == "diurnal":
        peak = p.rate * (1 + p.amplitude)
        candidates = _poisson(rng, peak, t0, t1)
        hours = (candidates % _DAY_S) / 3600.0
        rate = p.rate * (1 + p.amplitude * np.cos(2 * np.pi * (hours - p.peak_hour) / 24))
        kept: Times = candidates[rng.random(candidates.size) * peak < rate]
        return kept
    return _poisson(rng, p.rate, t0, t1)


def _changed(rng: np.random.Generator, p: Pattern) -> tuple[Pattern, str]:
    """The regime a model switches to halfway through."""
    roll = rng.random()
    if roll < 0.4:
        kind = str(rng.choice([k for k in PATTERNS if k != p.kind]))
        base = p.rate if p.kind != "rare" else float(rng.uniform(0.002, 0.05))
        return _draw_pattern(rng, kind, base), "new pattern"
    if roll < 0.7:
        factor = float(rng.uniform(4, 10))
        factor = factor if rng.random() < 0.5 else 1 / factor
        if p.kind == "periodic":
            return _draw_pattern(rng, "periodic", p.rate * factor), "new period"
        return replace(p, rate=p.rate * factor), f"rate x{factor:.2f}"
    if roll < 0.85:
        return replace(p, rate=0.0), "goes silent"
    return p, "appears"


def _profiles(rng: np.random.Generator, names: list[str],
              memory_mb: tuple[float, float]) -> dict[str, ModelProfile]:
    low, high = memory_mb
    memory = np.exp(rng.uniform(math.log(low), math.log(high), len(names)))
    load = 0.5 * (memory / 50) ** 0.9 * np.exp(rng.normal(0, 0.4, len(names)))
    return {n: ModelProfile(n, round(float(m), 1), round(float(np.clip(s, 0.5, 60.0)), 2))
            for n, m, s in zip(names, memory, load, strict=True)}


def _hot_swap(rng: np.random.Generator, shape: TraceShape, assigned: list[str],
              halves: dict[str, tuple[Times, Times]], about: dict[str, str],
              middle: float, end: float) -> None:
    """Apply :attr:`TraceShape.hot_swap_rate` to the generated ``halves`` (model -> arrivals
    before and after ``middle``): the model busiest in the first half falls to a rare model's
    rate in the second, and a model drawn among the rare ones turns hot. Done after everything
    else, so the other models' arrivals are those of the same seed without the swap."""
    names = list(halves)
    rare = [name for name, kind in zip(names, assigned, strict=True) if kind == "rare"]
    if not rare:
        raise ValueError(f"shape {shape.name!r}: a hot swap needs a rare model")
    busiest = max(names, key=lambda name: (halves[name][0].size, name))
    hot = str(rng.choice([name for name in rare if name != busiest]))
    quiet = _draw_pattern(rng, "rare", 0.0)
    turned = Pattern("poisson", shape.hot_swap_rate)
    for name, pattern, change in ((busiest, quiet, "goes quiet"), (hot, turned, "turns hot")):
        halves[name] = (halves[name][0], _arrivals(rng, pattern, middle, end))
        about[name] = about[name].split(" -> ")[0] + f" -> {change}: {pattern.describe()}"


def generate(shape: TraceShape) -> tuple[Trace, dict[str, ModelProfile], dict[str, str]]:
    """``(trace, models, description per model)`` for ``shape``; deterministic in its seed."""
    rng = np.random.default_rng(shape.seed)
    names = [f"model-{i:03d}" for i in range(shape.n_models)]
    kinds = list(shape.mix)
    weights = np.array([shape.mix[k] for k in kinds], dtype=float)
    counts = np.floor(weights / weights.sum() * shape.n_models).astype(int)
    counts[int(np.argmax(weights))] += shape.n_models - int(counts.sum())
    assigned = [k for k, c in zip(kinds, counts, strict=True) for _ in range(int(c))]
    rng.shuffle(assigned)
    ranks = rng.permutation(shape.n_models) + 1
    popularity = 1.0 / ranks.astype(float) ** shape.zipf_s
    total_rate = shape.requests_per_hour / 3600.0
    frequent = np.array([k != "rare" for k in assigned])
    popularity = popularity * frequent
    rates = total_rate * popularity / popularity.sum()

    models = _profiles(rng, names, shape.memory_mb)
    end = shape.hours * 3600.0
    middle = end / 2
    changing = set(rng.choice(shape.n_models, round(shape.change_fraction * shape.n_models),
                              replace=False).tolist())
    halves: dict[str, tuple[Times, Times]] = {}
    about: dict[str, str] = {}
    for i, name in enumerate(names):
        before = _draw_pattern(rng, assigned[i], float(rates[i]))
        after, change = (_changed(rng, before) if i in changing else (before, ""))
        first_half = np.empty(0) if change == "appears" else _arrivals(rng, before, 0.0, middle)
        halves[name] = (first_half, _arrivals(rng, after, middle, end))
        about[name] = before.describe() + (f" -> {change}: {after.describe()}" if change else "")
    if shape.hot_swap_rate > 0:
        _hot_swap(rng, shape, assigned, halves, about, middle, end)
    rows = sorted((float(t), name) for name, (first_half, second_half) in halves.items()
                  for t in np.concatenate([first_half, second_half]))
    if shape.pinned:
        counts_by_model: dict[str, int] = {}
        for _, name in rows:
            counts_by_model[name] = counts_by_model.get(name, 0) + 1
        small = sorted((n for n in names if models[n].memory_mb < 1000),
                       key=lambda n: -counts_by_model.get(n, 0))
        for name in small[:shape.pinned]:
            models[name] = replace(models[name], pinned=True)
            about[name] += " (pinned)"
    return rows, models, about


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="default: the shape's")
    parser.add_argument("--models", type=int, help="default: the shape's")
    parser.add_argument("--hours", type=float, help="default: the shape's")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mixed",
                        help="pattern mix and traffic level (seed/models/hours override it)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    base = SHAPES[args.shape]
    shape = replace(base, seed=base.seed if args.seed is None else args.seed,
                    n_models=base.n_models if args.models is None else args.models,
                    hours=base.hours if args.hours is None else args.hours)
    trace, models, about = generate(shape)
    args.out.mkdir(parents=True, exist_ok=True)
    write_trace(args.out / "trace.csv", trace)
    write_models(args.out / "models.csv", models)
    print(f"{len(trace)} requests for {len(models)} models over {shape.hours:g} h "
          f"-> {args.out}/trace.csv, {args.out}/models.csv")
    for name, text in about.items():
        print(f"  {name}: {text}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
