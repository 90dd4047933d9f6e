"""Gateway overhead: direct to Triton vs through warmctl's gateway, in one run.

    python bench/gateway.py [--rounds 2] [--interval-ms 2000]
    python bench/gateway.py --workers 1,2,4 [--rounds 1]   (bench/gateway_workers.py)

perf_analyzer measures p50/p99 at concurrency 1 and throughput at concurrency 16, on a trivial
Python model and on shortform_ranker, direct and through the gateway (interleaved, median of
--rounds); then the gateway's throughput with traffic recording on vs off, and with metrics
on (the recorder's flush listener counting, and ``/metrics`` scraped every second, 15x more
often than Prometheus' default) vs off (no listener, no scrape). The gateway's in-flight
counters are plain integer increments and stay on in both arms. Prints JSON with the ratios
and the issue's targets. ``--only metrics`` runs just the metrics comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine
from bench.gateway_workers import run_workers
from bench.perf import PerfResult, perf_analyzer
from controlplane.app import ControlPlane
from controlplane.config import load_settings
from controlplane.traffic.observation import Observation
from tests.support.repository import add_example, add_identity

MODELS = {"trivial": {"INPUT0": "4"}, "shortform_ranker": {}}


def _median(results: list[PerfResult]) -> dict[str, float]:
    return {
        "throughput": statistics.median(r.throughput for r in results),
        "p50_ms": statistics.median(r.p50_us for r in results) / 1e3,
        "p99_ms": statistics.median(r.p99_us for r in results) / 1e3,
    }


async def _scrape(url: str, period_s: float = 1.0) -> None:
    """Scrape ``/metrics`` as Prometheus would, every ``period_s``, until cancelled."""
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            response = await http.get(f"{url}/metrics")
            response.raise_for_status()
            await asyncio.sleep(period_s)


async def _metrics_arm(cp: ControlPlane, metrics: Any, on: bool, model: str,
                       shapes: dict[str, str], interval_ms: int) -> PerfResult:
    assert cp.recorder is not None and cp.gateway_url is not None
    listeners = cp.recorder.listeners
    if on and metrics.traffic.on_flush not in listeners:
        listeners.append(metrics.traffic.on_flush)
    if not on and metrics.traffic.on_flush in listeners:
        listeners.remove(metrics.traffic.on_flush)
    scraper = asyncio.create_task(_scrape(cp.admin_url)) if on else None
    try:
        for attempt in range(3):  # a shared, noisy machine: a window may not stabilize
            try:
                return await perf_analyzer(cp.gateway_url, model, 16, shapes,
                                           interval_ms * (attempt + 1))
            except RuntimeError as exc:
                if "stable" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")
    finally:
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper


async def _metrics_comparison(cp: ControlPlane, rounds: int,
                              interval_ms: int) -> dict[str, Any]:
    """Throughput at concurrency 16 with metrics on and off, interleaved (the order flips
    every round, so drift on a shared machine does not favour one arm)."""
    assert cp.admin.app is not None
    metrics = cp.admin.app.state.metrics
    runs: dict[str, dict[str, list[PerfResult]]] = {}
    for r in range(rounds):
        for model, shapes in MODELS.items():
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                result = await _metrics_arm(cp, metrics, on, model, shapes, interval_ms)
                runs.setdefault(model, {}).setdefault("on" if on else "off", []).append(result)
    out: dict[str, Any] = {}
    for model, arms in runs.items():
        on_t = statistics.median(x.throughput for x in arms["on"])
        off_t = statistics.median(x.throughput for x in arms["off"])
        out[model] = {"throughput_on": on_t, "throughput_off": off_t,
                      "ratio_on_off": round(on_t / off_t, 4), "cost": round(1 - on_t / off_t, 4),
                      "runs_on": [x.throughput for x in arms["on"]],
                      "runs_off": [x.throughput for x in arms["off"]]}
    per_model = list(out.values())
    out["end_to_end_cost_le_2pct"] = max(v["cost"] for v in per_model) <= 0.02
    out["accounting"] = await _accounting(metrics, max(v["throughput_off"] for v in per_model))
    out["metrics_cost_le_2pct"] = out["accounting"]["cost_at_throughput"] <= 0.02
    return out


async def _accounting(metrics: Any, throughput: float, scrape_period_s: float = 1.0,
                      batch: int = 20_000) -> dict[str, float]:
    """What metrics take from the gateway's event loop, timed directly (end-to-end ratios on
    a shared 2-core machine swing by more than the 2 % asked for): the flush listener per
    request, one scrape, and the in-flight counting wrapper per request. Their sum at the
    measured throughput and one scrape a second is the share of the loop metrics use."""
    observations = [Observation(f"m{i % 8}", "", (), 0.0, 0.001, "OK", i % 50 == 0,
                                0.5 if i % 50 == 0 else None) for i in range(batch)]
    t0 = time.perf_counter()
    metrics.traffic.on_flush(observations)
    listener_us = (time.perf_counter() - t0) / batch * 1e6
    t0 = time.perf_counter()
    for _ in range(20):
        await metrics.render()
    render_ms = (time.perf_counter() - t0) / 20 * 1e3

    async def call() -> int:
        return 1

    class Counted:
        in_flight = 0

        async def wrapped(self) -> int:
            self.in_flight += 1
            try:
                return await call()
            finally:
                self.in_flight -= 1

    counted, n = Counted(), 200_000
    t0 = time.perf_counter()
    for _ in range(n):
        await counted.wrapped()
    wrapped_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        await call()
    wrapper_us = max(0.0, (wrapped_s - (time.perf_counter() - t0)) / n * 1e6)
    per_request_us = (listener_us + wrapper_us) * throughput
    return {"listener_us_per_request": round(listener_us, 3),
            "scrape_ms": round(render_ms, 2),
            "in_flight_wrapper_us_per_request": round(wrapper_us, 3),
            "at_throughput": throughput,
            # a scrape's wall time, formatting thread included: an upper bound on loop time
            "cost_at_throughput": round(
                (per_request_us + render_ms * 1e3 / scrape_period_s) / 1e6, 4),
            "cost_at_throughput_scrape_15s": round(
                (per_request_us + render_ms * 1e3 / 15) / 1e6, 4)}


async def run(rounds: int, interval_ms: int, state: Path,
              only: str = "all") -> dict[str, Any]:
    repo = state / "repository"
    repo.mkdir()
    add_identity(repo, "trivial")
    add_example(repo, "shortform_ranker")
    settings = load_settings(
        data_dir=state / "state", model_repository=repo,
        backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0, "workers": 1},
        models={m: {"pinned": True} for m in MODELS})
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    try:
        assert cp.instance is not None and cp.gateway_url and cp.recorder is not None
        if only == "metrics":
            return {"metrics": await _metrics_comparison(cp, rounds, interval_ms)}
        targets = {"direct": cp.instance.grpc_url, "gateway": cp.gateway_url}
        raw: dict[tuple[str, str, int], list[PerfResult]] = {}
        for _ in range(rounds):
            for model, shapes in MODELS.items():
                for concurrency in (1, 16):
                    for target, url in targets.items():
                        result = await perf_analyzer(url, model, concurrency, shapes, interval_ms)
                        raw.setdefault((model, target, concurrency), []).append(result)
        recording: dict[str, dict[str, list[PerfResult]]] = {}
        for _ in range(rounds):
            for model, shapes in MODELS.items():
                for enabled in (True, False):
                    cp.recorder.enabled = enabled
                    result = await perf_analyzer(cp.gateway_url, model, 16, shapes, interval_ms)
                    recording.setdefault(model, {}).setdefault(
                        "on" if enabled else "off", []).append(result)
        cp.recorder.enabled = True
        metrics_report = await _metrics_comparison(cp, rounds, interval_ms)
        written = cp.recorder.written
        dropped = cp.recorder.dropped
    finally:
        await cp.stop()

    report: dict[str, Any] = {"models": {}}
    for model in MODELS:
        m = {
            f"{target}_c{c}": _median(raw[(model, target, c)])
            for target in targets for c in (1, 16)
        }
        d1, g1, d16, g16 = m["direct_c1"], m["gateway_c1"], m["direct_c16"], m["gateway_c16"]
        m["added_p50_ms_c1"] = round(g1["p50_ms"] - d1["p50_ms"], 3)
        m["p50_ratio_c1"] = round(g1["p50_ms"] / d1["p50_ms"], 3)
        m["throughput_ratio_c16"] = round(g16["throughput"] / d16["throughput"], 3)
        on = statistics.median(r.throughput for r in recording[model]["on"])
        off = statistics.median(r.throughput for r in recording[model]["off"])
        m["recording"] = {"throughput_on": on, "throughput_off": off,
                          "cost": round(1 - on / off, 4)}
        report["models"][model] = m
    t, s = report["models"]["trivial"], report["models"]["shortform_ranker"]
    report["targets"] = {
        "trivial_added_p50_le_0.3ms": t["added_p50_ms_c1"] <= 0.3,
        "shortform_p50_le_1.25x": s["p50_ratio_c1"] <= 1.25,
        "throughput_ge_0.8x_c16": min(t["throughput_ratio_c16"],
                                      s["throughput_ratio_c16"]) >= 0.8,
        "recording_cost_le_5pct": max(t["recording"]["cost"], s["recording"]["cost"]) <= 0.05,
    }
    report["targets"]["metrics_cost_le_2pct"] = metrics_report["metrics_cost_le_2pct"]
    report["metrics"] = metrics_report
    report["recorded"] = {"written": written, "dropped": dropped}
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--only", choices=["all", "metrics"], default="all")
    parser.add_argument("--workers", default=None,
                        help="comma-separated worker counts (e.g. 1,2,4): gateway worker "
                             "processes against direct Triton, gRPC and HTTP "
                             "(bench/gateway_workers.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.workers:
            counts = [int(n) for n in args.workers.split(",")]
            report = await run_workers(counts, args.rounds, args.interval_ms, Path(tmp))
        else:
            report = await run(args.rounds, args.interval_ms, Path(tmp), args.only)
    print(json.dumps({"bench": "gateway", "machine": machine(), **report}, indent=2))


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())  # the loop `warmctl serve` runs the gateway on
