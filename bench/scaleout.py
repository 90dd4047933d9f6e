"""Scale-out, live: a compressed diurnal day with a morning spike, replayed against embedded
tritonservers going from 2 to 3 instances, three ways (issue 18).

    python bench/scaleout.py [--quick] [--json-out PATH] [--seed 18]

The trace (:func:`build_trace`): ``CYCLES`` compressed days of ``cycle_s`` seconds, each of
the ``RATES`` models at a diurnal rate (highest at noon), plus ``spike_rate_per_s`` more
requests/s on ``hot`` (a model whose load takes ``LOAD_S["hot"]``) from 07:30 to 10:30. The
first day teaches the forecast; the part of the second day around the spike
(``window_hours``) is replayed live, once per strategy, open loop (each request sent at its
time, however long the earlier ones take):

* **ours**: warmctl's gateway over instances ``a`` and ``b`` (every model pinned, so ready on
  both), ``[autoscaler]`` on (``min_instances`` 2, ``max_instances`` 3), its forecast a
  :class:`~controlplane.policy.measured.SeasonalRates` trained on day one: it adds an
  instance ahead of the spike, which joins pre-warmed and gets only ready replicas.
* **reactive**: a client-side router straight to two plain tritonservers; when a model's
  measured rate asks for more replicas than there are instances (``REPLICA_RATE_PER_S``
  each), a third starts with no model loaded and gets that model's share at once; each
  model loads on its first request there, and the requests meanwhile wait for it.
* **unaware**: the same trigger, but the new instance gets an equal share of every model's
  requests at once (each loaded on its first request there).

A request "waited for a load" when it arrived while its model was loading where it was sent:
warmctl's own accounting for ours (the recorder's ``cold`` observations), the router's for
the others. Prints JSON with ``targets``, and the simulator's comparison
(``bench/scaleout_sim.py``) under ``simulated``. The live part is in ``scaleout_live.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, percentile

#: steady requests/s per model at its daily peak
RATES = {"hot": 3.0, "feed": 4.0, "search": 3.5, "thumbs": 2.5}
#: each model's load time on purpose (a sleep in initialize): a load must cost time
LOAD_S = {"hot": 2.5, "feed": 1.0, "search": 0.8, "thumbs": 0.6}
#: ``fleet.replica_rate_per_s``: the spike asks for more replicas than 2 instances hold
REPLICA_RATE_PER_S = 3.0
START_INSTANCES = 2
MAX_INSTANCES = 3
CYCLES = 2
#: the measured rate's window (``fleet.measured_rate_window_s``), the reactive trigger's too
MEASURED_WINDOW_S = 3.0


@dataclass(frozen=True)
class TraceConfig:
    cycle_s: float = 120.0
    spike_model: str = "hot"
    spike_rate_per_s: float = 12.0
    spike_hours: tuple[float, float] = (7.5, 10.5)
    #: the part of the second day replayed live (compressed hours)
    window_hours: tuple[float, float] = (2.0, 12.0)
    peak_hour: float = 12.0
    seed: int = 18
    rates: dict[str, float] = field(default_factory=lambda: dict(RATES))

    @property
    def hour_s(self) -> float:
        return self.cycle_s / 24.0

    def at(self, cycle: int, hour: float) -> float:
        """Trace seconds of ``hour`` on day ``cycle`` (0-based)."""
        return cycle * self.cycle_s + hour * self.hour_s


QUICK = TraceConfig(cycle_s=96.0, window_hours=(3.5, 12.0))


def diurnal_rate(peak: float, hour: float, peak_hour: float) -> float:
    """Requests/s at ``hour`` of a model whose rate is ``peak`` at ``peak_hour`` and 20 % of
    it twelve hours away."""
    return peak * (0.6 + 0.4 * math.cos(2 * math.pi * (hour - peak_hour) / 24.0))


def rate_at(cfg: TraceConfig, model: str, t: float) -> float:
    """The model's requests/s at trace second ``t`` (the spike included)."""
    hour = (t % cfg.cycle_s) / cfg.hour_s
    rate = diurnal_rate(cfg.rates[model], hour, cfg.peak_hour)
    if model == cfg.spike_model and cfg.spike_hours[0] <= hour < cfg.spike_hours[1]:
        rate += cfg.spike_rate_per_s
    return rate


def build_trace(cfg: TraceConfig, cycles: int = CYCLES) -> list[tuple[float, str]]:
    """(trace seconds, model), sorted: Poisson arrivals at :func:`rate_at` (thinning)."""
    rng = np.random.default_rng(cfg.seed)
    end = cycles * cfg.cycle_s
    out: list[tuple[float, str]] = []
    for model in sorted(cfg.rates):
        top = cfg.rates[model] + (cfg.spike_rate_per_s if model == cfg.spike_model else 0.0)
        n = int(rng.poisson(top * end))
        times = np.sort(rng.uniform(0.0, end, n))
        keep = rng.uniform(0.0, top, n)
        out += [(float(t), model) for t, k in zip(times, keep, strict=True)
                if k < rate_at(cfg, model, float(t))]
    out.sort()
    return out


def spike_window(cfg: TraceConfig, cycle: int = CYCLES - 1) -> tuple[float, float]:
    return cfg.at(cycle, cfg.spike_hours[0]), cfg.at(cycle, cfg.spike_hours[1])


def replay_window(cfg: TraceConfig) -> tuple[float, float]:
    return cfg.at(CYCLES - 1, cfg.window_hours[0]), cfg.at(CYCLES - 1, cfg.window_hours[1])


@dataclass(frozen=True)
class Sent:
    """One replayed request: times in seconds from the replay's start."""

    model: str
    sent: float
    latency_s: float
    ok: bool
    instance: str | None = None


@dataclass(frozen=True)
class Wait:
    """A request that waited for its model's load (seconds from the replay's start)."""

    model: str
    at: float
    instance: str | None = None


def replicas_wanted(rate_per_s: float, per_replica: float = REPLICA_RATE_PER_S) -> int:
    """The replica plan's rule: ``ceil(rate / per_replica)``, at least 1 with any demand."""
    return max(1, math.ceil(rate_per_s / per_replica - 1e-9)) if rate_per_s > 0 else 0


def scale_caused(waits: Sequence[Wait], decision_at: float | None,
                 added: Sequence[str]) -> list[Wait]:
    """Waits due to the scale event: on an added instance, or after the decision."""
    return [w for w in waits if w.instance in added
            or (decision_at is not None and w.at >= decision_at)]


def slow_like_a_load(requests: Sequence[Sent], steady_p99_s: float,
                     load_s: dict[str, float]) -> int:
    """A cross-check of the exact accounting: requests slower than the steady p99 by more than
    half their model's load time."""
    return sum(1 for r in requests
               if r.ok and r.latency_s > steady_p99_s + load_s.get(r.model, 0.0) / 2)


def _ms(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"n": len(values), "p50": round(percentile(values, 50) * 1e3, 2),
            "p99": round(percentile(values, 99) * 1e3, 2)}


def summarize(requests: Sequence[Sent], waits: Sequence[Wait], *,
              steady: tuple[float, float], spike: tuple[float, float],
              decision_at: float | None, first_request_at: float | None,
              added: Sequence[str], instances_max: int, spike_start: float,
              load_s: dict[str, float]) -> dict[str, Any]:
    """One strategy's figures (times in seconds from the replay's start)."""
    def lat(a: float, b: float) -> list[float]:
        return [r.latency_s for r in requests if r.ok and a <= r.sent < b]
    s, k = lat(*steady), lat(*spike)
    p99s = percentile(s, 99) if s else None
    p99k = percentile(k, 99) if k else None
    caused = scale_caused(waits, decision_at, added)
    return {
        "requests": len(requests), "lost": sum(1 for r in requests if not r.ok),
        "waited_for_load": len(waits), "scale_caused_waits": len(caused),
        "waits_by_model": {m: sum(1 for w in waits if w.model == m)
                           for m in sorted({w.model for w in waits})},
        "slow_like_a_load": None if p99s is None else slow_like_a_load(requests, p99s, load_s),
        "latency_ms": {"steady": _ms(s), "spike": _ms(k)},
        "spike_p99_over_steady": round(p99k / p99s, 3) if p99s and p99k else None,
        "decision_at_s": None if decision_at is None else round(decision_at, 3),
        "decision_before_spike_s": (None if decision_at is None
                                    else round(spike_start - decision_at, 3)),
        "first_request_after_decision_s": (
            None if decision_at is None or first_request_at is None
            else round(first_request_at - decision_at, 3)),
        "instances_added": list(added), "instances_max": instances_max,
    }


def targets(results: dict[str, dict[str, Any]]) -> dict[str, bool]:
    ours, reactive, unaware = results["ours"], results["reactive"], results["unaware"]
    ratio = ours["spike_p99_over_steady"]
    return {
        "ours_zero_scale_caused_waits": ours["scale_caused_waits"] == 0,
        "ours_spike_p99_within_1_5x_steady": ratio is not None and ratio <= 1.5,
        "ours_nothing_lost": ours["lost"] == 0,
        "ours_scaled_out": bool(ours["instances_added"]),
        "reactive_and_unaware_measured": all(
            r["requests"] > 0 and r["instances_added"] for r in (reactive, unaware)),
        "ours_fewer_waits_than_reactive": ours["waited_for_load"] < reactive["waited_for_load"],
        "ours_fewer_waits_than_unaware": ours["waited_for_load"] < unaware["waited_for_load"],
    }


def simulated(seed: int | None = None) -> dict[str, Any]:
    """``scaleout_sim.run``'s results and targets (scale events without their reasons)."""
    from bench import scaleout_sim  # the repository root is on sys.path (above)

    out = scaleout_sim.run() if seed is None else scaleout_sim.run(seed)
    results = {name: {k: ([{f: e[f] for f in ("at", "action", "count")} for e in v]
                          if k == "scale_events" else v) for k, v in r.items()}
               for name, r in out["results"].items()}
    return {"trace": out["trace"], "results": results, "targets": out["targets"]}


NOTES = [
    "Times in results are seconds from the replay's start (the window of day two); spike_s "
    "and steady_s say which requests count as spike and steady (by send time).",
    "Ours: warmctl's planner forecasts from an hourly day profile and cannot see a compressed "
    "day, so cp.autoscaler.forecast is injected: a SeasonalRates (the rate one cycle before) "
    "trained on day one's arrivals of the same trace (fed, not replayed live, to keep the run "
    "short). The replica plan and the reactive trigger use the measured rate only.",
    "Reactive and unaware are emulated by a client-side router straight to plain "
    "tritonservers (warmctl's gateway never routes to a cold replica): their waits are the "
    "router's own count of requests that waited for a load_model; ours are warmctl's "
    "recorder observations with cold=True.",
    "scale_caused_waits: waits on an added instance or sent after the scale decision; "
    "slow_like_a_load: requests slower than the steady p99 plus half the model's load time "
    "(a cross-check of the exact count).",
    "first_request_after_decision_s for ours runs until a replica is ready on the added "
    "instance and the gateway sends it a request: the join pre-warms only what the replica "
    "plan gives it then (detail.ours.fleet_actions, kind join); "
    "detail.ours.spike_model_ready_on_added_at_s says when the spiking model was ready there.",
    "simulated: bench/scaleout_sim.py's run() (its own trace and 30-min compressed days), "
    "scale events without their reasons.",
]


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter day and window")
    parser.add_argument("--seed", type=int, default=TraceConfig.seed)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else TraceConfig()
    cfg = TraceConfig(**{**base.__dict__, "seed": args.seed})
    started = time.monotonic()
    from bench.scaleout_live import run_all

    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        live_out = await run_all(cfg, Path(tmp))
    sim = simulated()
    out = {"bench": "scaleout", "machine": machine(), "quick": args.quick, **live_out,
           "simulated": sim, "notes": NOTES,
           "runtime_s": round(time.monotonic() - started, 1)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    return 0 if all(out["targets"].values()) else 1


if __name__ == "__main__":
    import uvloop

    sys.exit(uvloop.run(main()))
