"""Scale-out in the simulator: pre-warmed, reactive and model-unaware joins on the same trace.

The trace is a :mod:`traces` one (mostly diurnal models, two days), compressed so that a day
lasts ``CYCLE_S`` seconds, plus a morning spike (from 08:00 to 10:00 of each compressed day,
``SPIKE_RATE_PER_S`` more requests/s) on its busiest model of those that load in
``MIN_SPIKE_LOAD_S`` or more. The first day teaches the forecast
(the rate seen at the same time a day before); figures count the second. Every strategy runs
the same autoscaler (:mod:`controlplane.policy.autoscale_sim`) from 2 instances, cool-downs and
lead compressed with the day. Prints JSON with ``targets``:

    python bench/scaleout_sim.py
    python bench/scaleout_sim.py --seed 22

A live bench embeds it: ``scaleout_sim.run()`` returns the same mapping.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

import numpy as np

try:  # run as a script (bench/ on the path), or imported as bench.scaleout_sim
    import traces
except ImportError:  # pragma: no cover - depends on how it is imported
    from bench import traces

from controlplane.policy.autoscale_sim import compare_autoscaling
from controlplane.policy.autoscale_types import AutoscaleOptions

DAY_S = 86400.0
CYCLE_S = 1800.0  # one compressed day (48x)
SPIKE_HOURS = (8.0, 10.0)
SPIKE_RATE_PER_S = 12.0
MIN_SPIKE_LOAD_S = 5.0
START_INSTANCES = 2
INSTANCE_START_S = 10.0
SHAPE = traces.TraceShape("scaleout", seed=21, n_models=12, hours=48, requests_per_hour=1000.0,
                          mix={"diurnal": 0.6, "poisson": 0.25, "rare": 0.15},
                          change_fraction=0.0)
#: ``[autoscaler]`` defaults with the times compressed (a 600 s scale-in cool-down would be a
#: third of a compressed day)
OPTIONS = AutoscaleOptions(
    min_instances=2, max_instances=4, standby=0, scale_out_cooldown_s=30.0,
    scale_in_cooldown_s=200.0, max_in_flight_per_replica=8.0, latency_ratio=2.0,
    lead_margin_s=20.0, default_warm_up_s=30.0, rate_per_replica=5.0, instance_budget_mb=None,
    interval_s=5.0, measured_window_s=30.0)


def build_trace(seed: int = SHAPE.seed) -> tuple[list[tuple[float, str]], dict[str, Any], str,
                                                 list[tuple[float, float]]]:
    """(compressed trace with the spike, models, the spiking model, spike windows)."""
    shape = replace(SHAPE, seed=seed)
    rows, models, _ = traces.generate(shape)
    scale = CYCLE_S / DAY_S
    compressed = [(t * scale, m) for t, m in rows]
    counts: dict[str, int] = {}
    for _, m in rows:
        counts[m] = counts.get(m, 0) + 1
    # the busiest model of those that take a while to load (a fast loader hides the difference)
    slow = [m for m in counts if models[m].load_s >= MIN_SPIKE_LOAD_S] or list(counts)
    hot = max(slow, key=lambda m: (counts[m], m))
    rng = np.random.default_rng(seed + 1000)
    days = round(shape.hours * 3600 / DAY_S)
    spikes = [(d * CYCLE_S + SPIKE_HOURS[0] / 24 * CYCLE_S,
               d * CYCLE_S + SPIKE_HOURS[1] / 24 * CYCLE_S) for d in range(days)]
    for start, end in spikes:
        n = int(rng.poisson(SPIKE_RATE_PER_S * (end - start)))
        compressed += [(float(t), hot) for t in rng.uniform(start, end, n)]
    compressed.sort()
    return compressed, models, hot, spikes


def run(seed: int = SHAPE.seed) -> dict[str, Any]:
    """The comparison and its ``targets`` (JSON-able)."""
    trace, models, hot, spikes = build_trace(seed)
    out = compare_autoscaling(trace, models, None, OPTIONS, START_INSTANCES, cycle_s=CYCLE_S,
                              instance_start_s=INSTANCE_START_S, spikes=spikes)
    r = out["results"]
    out["trace"] = {"shape": SHAPE.name, "seed": seed, "requests": len(trace),
                    "models": len(models), "cycle_s": CYCLE_S, "spiking_model": hot,
                    "spike_load_s": models[hot].load_s,
                    "spike_rate_per_s": SPIKE_RATE_PER_S, "spikes": [list(w) for w in spikes]}
    out["targets"] = {
        "prewarmed_zero_scale_waits": r["prewarmed"]["scale_waits"] == 0,
        "prewarmed_fewer_waits_than_reactive": r["prewarmed"]["waited"] < r["reactive"]["waited"],
        "prewarmed_fewer_waits_than_unaware": r["prewarmed"]["waited"] < r["unaware"]["waited"],
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SHAPE.seed)
    args = parser.parse_args(argv)
    out = run(args.seed)
    print(json.dumps(out, indent=2))
    return 0 if all(out["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
