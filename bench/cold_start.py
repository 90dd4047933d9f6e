"""Cold-start baseline: what a load and the first request cost with no warm-up configured.

    python bench/cold_start.py [--repeats 3] [--steady 200] [--models a,b] [--device gpu]

Prints JSON: per example model, the load-to-ready time and the plugin's breakdown of it, the
first request's latency right after load, and the steady p50/p99 after --steady requests,
each the median over --repeats load cycles. The ratio first/steady is the cold-start penalty
the warm-up issue has to remove.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    EXAMPLE_MODELS,
    embedded_stack,
    example_repository,
    machine,
    median,
    percentile,
    sample_inputs,
    timed_infer,
)


async def measure(model: str, repeats: int, steady: int, state_dir: Path,
                  auto_complete: bool, repository: Path) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    triton = {"disable_auto_complete_config": not auto_complete}
    async with embedded_stack(state_dir, repository=repository, triton=triton) as manager:
        assert manager.instance.process is not None
        url = manager.instance.process.grpc_url
        spec = manager.repository.spec(model)
        with grpcclient.InferenceServerClient(url) as client:
            for _ in range(repeats):
                await manager.load(model, trigger="bench")
                event = manager.store.events(model, limit=1)[0]
                inputs = sample_inputs(spec)
                first = await asyncio.to_thread(timed_infer, client, model, inputs)
                second = await asyncio.to_thread(timed_infer, client, model, inputs)
                latencies = [await asyncio.to_thread(timed_infer, client, model, inputs)
                             for _ in range(steady)]
                # read after the first request, so the plugin's first_execute phase is in
                assert manager.instance.metrics is not None
                footprint = (await manager.instance.metrics.footprints())[model]
                await manager.unload(model, trigger="bench", force=True)
                phases = dict(footprint.load_phases)
                # what Triton and the stub spend outside our initialize (process spawn, IPC)
                phases["outside_initialize"] = (event.triton_s or 0) - phases["initialize"]
                runs.append({
                    "load_s": event.duration_s,
                    "triton_load_s": event.triton_s,
                    "phases": phases,
                    "memory_mb": (event.memory_bytes or 0) / 2**20,
                    "first_ms": first * 1e3,
                    "second_ms": second * 1e3,
                    "steady_p50_ms": percentile(latencies, 50) * 1e3,
                    "steady_p99_ms": percentile(latencies, 99) * 1e3,
                })
    phases = sorted({p for r in runs for p in r["phases"]})
    result = {
        key: round(median([r[key] for r in runs]), 4)
        for key in ("load_s", "triton_load_s", "memory_mb", "first_ms", "second_ms",
                    "steady_p50_ms", "steady_p99_ms")
    }
    result["load_phases_s"] = {
        p: round(median([r["phases"].get(p, 0.0) for r in runs]), 4) for p in phases}
    result["first_over_steady_p50"] = round(result["first_ms"] / result["steady_p50_ms"], 2)
    result["runs"] = repeats
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steady", type=int, default=200)
    parser.add_argument("--models", default=",".join(EXAMPLE_MODELS))
    parser.add_argument("--auto-complete", action="store_true",
                        help="leave Triton's config auto-complete on (Triton's default; "
                             "warmctl turns it off)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: the example configs say KIND_GPU, as a GPU user's would")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        repository = example_repository(args.device, Path(tmp))
        for model in args.models.split(","):
            results[model] = await measure(model, args.repeats, args.steady, Path(tmp) / model,
                                           args.auto_complete, repository)
    print(json.dumps({"bench": "cold_start", "warmup": "none", "device": args.device,
                      "triton_auto_complete": args.auto_complete, "machine": machine(),
                      "models": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
