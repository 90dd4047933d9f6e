"""First requests after load: no warm-up vs a static one-shape warm-up vs ours.

    python bench/first_request.py [--rounds 3] [--models a,b] [--record 400] [--device gpu]

For each example model: record a traffic mix through the gateway (shapes drawn, seeded, from
the mix below), then, each round and variant on a fresh load, send the first 100 requests
(drawn from the same mix) straight to Triton and time them; afterwards measure the steady
latency of every shape in the mix. Prints JSON: per variant the load-to-ready time and the
first-100 latencies, raw and as a ratio to the steady p50 of each request's own shape (a
batch of 32 is slower than a batch of 1 when warm too, so ratios are the fair comparison).

Variants: (a) no warm-up, no probes; (b) a hand-written static warm-up at one fixed shape
(batch 1, typical dims, zero data, count 3), no probes; (c) warmctl: generated from the
recorded traffic, then probed until latency settles. Reference "warm": the same request
sequences replayed on the fully warm model, i.e. the spread this machine shows anyway.

Before any traffic is recorded, the same first-100 measurement compares how a model's first
loads behave: ``first_load.probe_only`` is warmctl now (a plain load, then probes; a probe
that succeeded may become a warm-up sample for later loads) and ``first_load.synthetic``
the synthetic warm-up warmctl generated from the config alone up to commit 92beddd (batch 1
and the largest batch the dynamic batcher forms, variable dims at 16, zero data), which could
fail the load of a model it did not fit.

``--device gpu`` runs the example models with KIND_GPU configs (scheduler on, defaults as a
user would run them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, example_repository, machine, percentile
from controlplane.app import ControlPlane
from controlplane.config import load_settings
from controlplane.lifecycle.states import LoadPlan
from controlplane.triton.repository import ModelSpec

#: per model: batch size -> weight, and per variable input: length -> weight
MIXES: dict[str, dict[str, dict[int, float]]] = {
    "shortform_ranker": {"batch": {1: 0.6, 2: 0.2, 8: 0.15, 32: 0.05}},
    "longform_ranker": {"batch": {1: 0.7, 4: 0.3},
                        "watch_history": {20: 0.3, 50: 0.4, 100: 0.2, 200: 0.1}},
    "premium_ranker": {"batch": {1: 0.8, 8: 0.2}},
    "query_encoder": {"batch": {1: 1.0}, "tokens": {4: 0.2, 8: 0.3, 12: 0.3, 24: 0.2}},
    "thumbnail_scorer": {"batch": {1: 0.5, 16: 0.5}},
}
STATIC_LENGTH = 32  # the "typical" length a hand-written warm-up would pick


def draw(rng: random.Random, weights: dict[int, float]) -> int:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def request_shapes(spec: ModelSpec, n: int, seed: int) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    mix = MIXES[spec.name]
    shapes = []
    for _ in range(n):
        batch = draw(rng, mix["batch"])
        shapes.append({t.name: [batch, *(draw(rng, mix[t.name]) if d == -1 else d
                                         for d in t.dims)] for t in spec.inputs})
    return shapes


def make_inputs(spec: ModelSpec, shape: dict[str, list[int]],
                rng: np.random.Generator) -> list[grpcclient.InferInput]:
    inputs = []
    for t in spec.inputs:
        dims = shape[t.name]
        bounds = spec.parameters.get(f"input_range.{t.name}")
        if bounds:
            lo, hi = (int(v) for v in bounds.split(":"))
            array = rng.integers(lo, hi, size=dims, dtype=np.int64)
        else:
            array = rng.standard_normal(dims).astype(np.float32)
        tensor = grpcclient.InferInput(t.name, dims, t.datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def timed(url: str, spec: ModelSpec, shapes: list[dict[str, list[int]]],
          seed: int) -> list[float]:
    import time

    rng = np.random.default_rng(seed)
    prepared = [make_inputs(spec, s, rng) for s in shapes]
    latencies = []
    with grpcclient.InferenceServerClient(url) as client:
        # A real client's connection is long warm: its first ModelInfer call on a channel
        # costs ~1 ms more whatever the model. Pay that on a model that does not exist.
        with contextlib.suppress(InferenceServerException):
            client.infer("__warm_the_channel__", prepared[0], client_timeout=10)
        for inputs in prepared:
            t0 = time.perf_counter()
            client.infer(spec.name, inputs, client_timeout=120)
            latencies.append(time.perf_counter() - t0)
    return latencies


def key(shape: dict[str, list[int]]) -> str:
    return ";".join(f"{k}:{'x'.join(map(str, v))}" for k, v in sorted(shape.items()))


class StaticPreparer:
    """What a careful operator writes by hand: one warm-up sample at one fixed shape."""

    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        inputs = {
            t.name: {"data_type": t.data_type,
                     "dims": [str(STATIC_LENGTH if d == -1 else d) for d in t.dims],
                     "zero_data": True}
            for t in spec.inputs}
        warmup = [{"name": "static", "batch_size": 1, "inputs": inputs, "count": 3}]
        return LoadPlan(config={**spec.config, "model_warmup": warmup},
                        details={"variant": "static"})


class SyntheticPreparer:
    """The config-only warm-up warmctl generated before any traffic up to commit 92beddd."""

    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        top = spec.max_batch_size
        if spec.preferred_batch_sizes:
            top = min(max(spec.preferred_batch_sizes), spec.max_batch_size)
        batches = sorted({1, top}) if spec.max_batch_size > 0 and spec.dynamic_batching else [1]
        inputs = {t.name: {"data_type": t.data_type, "dims": [str(16 if d == -1 else d)
                                                              for d in t.dims],
                           "zero_data": True} for t in spec.inputs}
        warmup = [{"name": f"default_b{b}", "batch_size": b, "inputs": inputs, "count": 3}
                  for b in batches]
        return LoadPlan(config={**spec.config, "model_warmup": warmup},
                        details={"variant": "synthetic"})


async def first_loads(cp: ControlPlane, model: str, rounds: int, variants: dict[str, Any],
                      seed_base: int) -> dict[str, list[dict[str, Any]]]:
    """Each round and variant (rotated: no fixed first slot): a fresh load with that
    variant's preparer and probe, then the first 100 requests straight to Triton (raw
    latencies; ratios are taken later). Leaves warmctl's own preparer and probe in place."""
    assert cp.manager is not None and cp.instance is not None
    manager, url = cp.manager, cp.instance.grpc_url
    spec = manager.repository.spec(model)
    ours = (manager.preparer, manager.probe)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for name in list(variants)[shift:] + list(variants)[:shift]:
            await manager.unload(model, trigger="bench", force=True)
            manager.preparer, manager.probe = variants[name]
            await manager.load(model, trigger="bench")
            event = manager.store.events(model, limit=1)[0]
            shapes = request_shapes(spec, 100, seed_base + r)
            latencies = await asyncio.to_thread(timed, url, spec, shapes, r)
            results[name].append({"load_to_ready_s": event.duration_s, "shapes": shapes,
                                  "latencies": latencies})
    manager.preparer, manager.probe = ours
    return results


def summarize(runs: list[dict[str, Any]], steady: dict[str, float]) -> dict[str, Any]:
    raw = [x for run in runs for x in run["latencies"]]
    ratios = [x / steady[key(s)] for run in runs
              for x, s in zip(run["latencies"], run["shapes"], strict=True)]
    firsts = [run["latencies"][0] / steady[key(run["shapes"][0])] for run in runs]
    return {
        "load_to_ready_s": round(statistics.median(r["load_to_ready_s"] for r in runs), 3),
        "first100_p50_ms": round(percentile(raw, 50) * 1e3, 3),
        "first100_p99_ms": round(percentile(raw, 99) * 1e3, 3),
        "first100_max_ms": round(max(raw) * 1e3, 3),
        "ratio_p50": round(percentile(ratios, 50), 3),
        "ratio_p99": round(percentile(ratios, 99), 3),
        "ratio_max": round(max(ratios), 3),
        "first_request_ratio": round(statistics.median(firsts), 2),
    }


async def bench_model(cp: ControlPlane, model: str, rounds: int, record: int) -> dict[str, Any]:
    assert cp.manager is not None and cp.instance is not None and cp.gateway_url
    manager, url = cp.manager, cp.instance.grpc_url
    spec = manager.repository.spec(model)
    ours = (manager.preparer, manager.probe)
    variants = {"none": (None, None), "static": (StaticPreparer(), None), "generated": ours}

    # a model nobody has sent traffic to yet: its first loads
    before_traffic = await first_loads(cp, model, rounds, {
        "probe_only": ours, "synthetic": (SyntheticPreparer(), None)}, seed_base=2000)
    await manager.unload(model, trigger="bench", force=True)

    # record the traffic mix through the gateway (it lazily loads the model with its default)
    await asyncio.to_thread(timed, cp.gateway_url, spec, request_shapes(spec, record, 1), 1)
    assert cp.recorder is not None
    await cp.recorder.flush()
    # one load that proves the traffic-shaped samples by probes (warmctl applies a sample in
    # model_warmup only once the model served it); the measured loads below apply them
    await manager.unload(model, trigger="bench", force=True)
    await manager.load(model, trigger="bench")

    results = await first_loads(cp, model, rounds, variants, seed_base=1000)

    # steady latency of every shape in the mix, on the warm model
    mix_shapes = {key(s): s for s in request_shapes(spec, 2000, 7)}
    steady: dict[str, float] = {}
    for k, shape in mix_shapes.items():
        await asyncio.to_thread(timed, url, spec, [shape] * 20, 3)
        steady[k] = statistics.median(await asyncio.to_thread(timed, url, spec, [shape] * 40, 4))
    steady_mix = [steady[key(s)] for s in request_shapes(spec, 1000, 11)]
    # the noise floor: the very same first-100 sequences again, on the fully warm model
    for r in range(rounds):
        shapes = request_shapes(spec, 100, 1000 + r)
        latencies = await asyncio.to_thread(timed, url, spec, shapes, r)
        results.setdefault("warm", []).append({"load_to_ready_s": 0.0, "shapes": shapes,
                                                "latencies": latencies})

    report: dict[str, Any] = {"steady_p50_ms": round(percentile(steady_mix, 50) * 1e3, 3)}
    for name, runs in results.items():
        report[name] = summarize(runs, steady)
    report["first_load"] = {name: summarize(runs, steady)
                            for name, runs in before_traffic.items()}
    g, n, w = report["generated"], report["none"], report["warm"]
    report["targets"] = {
        "generated_p50_le_1.2x_steady": g["ratio_p50"] <= 1.2,
        "generated_p99_le_1.2x_steady": g["ratio_p99"] <= 1.2,
        # the same bar, measured from the warm model's own spread on this machine
        "generated_p99_le_1.2x_warm_p99": g["ratio_p99"] <= 1.2 * w["ratio_p99"],
        "generated_load_to_ready_le_1.5x_none": g["load_to_ready_s"] <= 1.5 * n["load_to_ready_s"],
    }
    latest = cp.warmups.latest(model)
    report["warmup_config"] = None if latest is None else {
        "version": latest.version, "samples": len(latest.samples), "coverage": latest.coverage}
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", type=int, default=400)
    parser.add_argument("--models", default=",".join(MIXES))
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: the example configs say KIND_GPU, as a GPU user's would")
    args = parser.parse_args()
    out: dict[str, Any] = {"bench": "first_request", "device": args.device,
                           "machine": machine(), "models": {}}
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(
                data_dir=Path(tmp), model_repository=example_repository(args.device, Path(tmp)),
                backends_dir=ROOT / "triton_backends", admin={"port": 0},
                gateway={"port": 0, "http_port": 0},
                warmup={"min_requests": 50})
            cp = ControlPlane(settings)
            await cp.start(wait_pinned=True)
            try:
                out["models"][model] = await bench_model(cp, model, args.rounds, args.record)
            finally:
                await cp.stop()
        print(f"{model}: done", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
