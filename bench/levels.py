"""Load-to-ready time from each warmth level the scheduler uses.

    python bench/levels.py [--repeats 3] [--models a,b]

For each model: *cold* (the model's files and the torch package's files dropped from the page
cache, as on a machine that has not run it lately), *staged* (the same files read into the page
cache first, which is what the scheduler does for models it expects soon), and *cpu* (already
loaded on the CPU: a request is served at once). No GPU on these machines: the *gpu* level is
not measured here. Plain loads (no warm-up, no probes) so the figures isolate the level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, embedded_stack, machine, sample_inputs, timed_infer
from controlplane.scheduler.levels import evict, resident_fraction, stage

MODELS = ["premium_ranker", "shortform_ranker", "thumbnail_scorer"]


def runtime_files() -> list[Path]:
    """What a Python-backend stub reads to import torch."""
    return [p for p in Path(torch.__file__).parent.rglob("*") if p.is_file()]


async def measure(model: str, repeats: int, state: Path) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    model_files = [p for p in (ROOT / "model_repository" / model).rglob("*") if p.is_file()]
    runtime = runtime_files()
    times: dict[str, list[float]] = {"cold": [], "staged": []}
    cached: dict[str, list[float]] = {"cold": [], "staged": []}
    served: list[float] = []
    async with embedded_stack(state) as manager:
        assert manager.instance.process is not None
        for _ in range(repeats):
            for level in ("cold", "staged"):
                await manager.unload(model, trigger="bench", force=True)
                if level == "cold":
                    await asyncio.to_thread(evict, [*model_files, *runtime])
                else:
                    await asyncio.to_thread(stage, [*model_files, *runtime])
                cached[level].append(await asyncio.to_thread(resident_fraction, model_files))
                t0 = time.perf_counter()
                await manager.load(model, trigger="bench")
                times[level].append(time.perf_counter() - t0)
            spec = manager.repository.spec(model)
            with grpcclient.InferenceServerClient(manager.instance.process.grpc_url) as c:
                inputs = sample_inputs(spec)
                await asyncio.to_thread(timed_infer, c, model, inputs)  # the first one
                served.append(statistics.median(
                    [await asyncio.to_thread(timed_infer, c, model, inputs) for _ in range(20)]))
    return {
        "cold_s": round(statistics.median(times["cold"]), 3),
        "staged_s": round(statistics.median(times["staged"]), 3),
        "cpu_loaded_request_ms": round(statistics.median(served) * 1e3, 3),
        "page_cache_before_load": {k: round(statistics.median(v), 2) for k, v in cached.items()},
        "runs": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            report[model] = await measure(model, args.repeats, Path(tmp) / model)
    runtime_mb = sum(p.stat().st_size for p in runtime_files()) / 2**20
    print(json.dumps({"bench": "levels", "machine": machine(), "gpu": "none here",
                      "runtime_files_mb": round(runtime_mb), "models": report}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
