"""Gateway overhead: direct to Triton vs through warmctl's gateway, in one run.

    python bench/gateway.py [--rounds 2] [--interval-ms 2000]

perf_analyzer measures p50/p99 at concurrency 1 and throughput at concurrency 16, on a trivial
Python model and on shortform_ranker, direct and through the gateway (interleaved, median of
--rounds); then the gateway's throughput with traffic recording on vs off. Prints JSON with
the ratios and the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine
from bench.perf import PerfResult, perf_analyzer
from controlplane.app import ControlPlane
from controlplane.config import load_settings
from tests.support.repository import add_example, add_identity

MODELS = {"trivial": {"INPUT0": "4"}, "shortform_ranker": {}}


def _median(results: list[PerfResult]) -> dict[str, float]:
    return {
        "throughput": statistics.median(r.throughput for r in results),
        "p50_ms": statistics.median(r.p50_us for r in results) / 1e3,
        "p99_ms": statistics.median(r.p99_us for r in results) / 1e3,
    }


async def run(rounds: int, interval_ms: int, state: Path) -> dict[str, Any]:
    repo = state / "repository"
    repo.mkdir()
    add_identity(repo, "trivial")
    add_example(repo, "shortform_ranker")
    settings = load_settings(
        data_dir=state / "state", model_repository=repo,
        backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0},
        models={m: {"pinned": True} for m in MODELS})
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    try:
        assert cp.instance is not None and cp.gateway_url and cp.recorder is not None
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
    report["recorded"] = {"written": written, "dropped": dropped}
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval-ms", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = await run(args.rounds, args.interval_ms, Path(tmp))
    print(json.dumps({"bench": "gateway", "machine": machine(), **report}, indent=2))


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())  # the loop `warmctl serve` runs the gateway on
