"""Model formats compared: what each costs to load and what its first requests cost (issue 12).

    python bench/formats.py [--repeats 2] [--steady 200] [--device cpu|gpu]

One architecture (the ``history_ranker`` example: the same weights) served as TorchScript, an
ExportedProgram, an AOTInductor package, under torch.compile without and with a restored
compile cache, and as an eager ``nn.Module`` in a plain Python-backend model (reference).
Each is loaded ``--repeats`` times by the lifecycle manager with no warm-up (the format alone);
after each load: the first request, the first 100 (p50/p99), then ``--steady`` more (p50).
Requests are batch 4 with a history of 20 (the exported example is batch 4, length 8: the
compiled model meets a new shape, as traffic would). Prints JSON: per format the medians,
the load phases, ratios to the format's own steady p50, and the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import tritonclient.grpc as grpcclient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import embedded_stack, machine, median, percentile, sample_inputs, timed_infer
from controlplane.triton.repository import ModelRepository

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "model_repository"
sys.path.insert(0, str(EXAMPLES))
import build_models  # noqa: E402

#: format -> the repository model serving it
MODELS = {"torchscript": "hr_torchscript", "exported_program": "hr_export",
          "aoti": "hr_aoti", "compile_uncached": "hr_compiled", "compile_cached": "hr_compiled",
          "eager": "hr_eager"}
EAGER_MODEL_PY = '''
import sys
import numpy as np
import torch
import triton_python_backend_utils as pb_utils

sys.path.insert(0, {examples!r})
import build_models


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(1)
        self.module = build_models.module("history_ranker_export")

    def execute(self, requests):
        out = []
        with torch.inference_mode():
            for r in requests:
                h = torch.from_numpy(pb_utils.get_input_tensor_by_name(r, "history").as_numpy())
                c = torch.from_numpy(pb_utils.get_input_tensor_by_name(r, "context").as_numpy())
                score = self.module(h, c).numpy()
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("score", score)]))
        return out
'''


def build_repository(target: Path, device: str) -> Path:
    """The history ranker in every format, under ``target`` (configs from the examples)."""
    sources = {"hr_torchscript": "history_ranker_export", "hr_export": "history_ranker_export",
               "hr_aoti": "history_ranker_aoti", "hr_compiled": "history_ranker_compiled",
               "hr_eager": "history_ranker_export"}
    for name, source in sources.items():
        config = (EXAMPLES / source / "config.pbtxt").read_text()
        config = config.replace(f'name: "{source}"', f'name: "{name}"')
        if device == "gpu":
            config = config.replace("KIND_CPU", "KIND_GPU")
        folder = target / name / "1"
        folder.mkdir(parents=True)
        if name == "hr_eager":
            config = config.replace('backend: "torchscript"', 'backend: "python"')
            (folder / "model.py").write_text(EAGER_MODEL_PY.format(examples=str(EXAMPLES)))
        elif name == "hr_torchscript":
            torch.jit.script(build_models.module(source)).save(str(folder / "model.pt"))
        elif name == "hr_aoti" and device == "gpu":
            build_models.build(target / "_gpu", source, device="cuda")
            shutil.copy(build_models.target_path(target / "_gpu", source), folder / "model.pt2")
        else:
            built = build_models.target_path(EXAMPLES, source)
            if not built.is_file():
                raise SystemExit(f"{built} missing: run model_repository/build_models.py")
            shutil.copy(built, folder / "model.pt2")
        (target / name / "config.pbtxt").write_text(config)
    return target


async def measure(fmt: str, repeats: int, steady: int, state: Path,
                  repository: Path) -> dict[str, Any]:
    model = MODELS[fmt]
    spec = ModelRepository(repository).spec(model)
    inputs = sample_inputs(spec, batch=4, lengths={"history": 20})
    cache_dir = state / "compile_cache" / model
    runs = []
    async with embedded_stack(state, repository=repository) as manager:
        assert manager.instance.process is not None and manager.instance.metrics is not None
        with grpcclient.InferenceServerClient(manager.instance.process.grpc_url) as client:
            if fmt == "compile_cached":  # one load to fill the cache, not measured
                await manager.load(model, trigger="bench")
                await manager.unload(model, trigger="bench", force=True)
            for _ in range(repeats):
                if fmt == "compile_uncached":
                    shutil.rmtree(cache_dir, ignore_errors=True)
                await manager.load(model, trigger="bench")
                event = manager.store.events(model, limit=1)[0]
                first100 = [await asyncio.to_thread(timed_infer, client, model, inputs)
                            for _ in range(100)]
                later = [await asyncio.to_thread(timed_infer, client, model, inputs)
                         for _ in range(steady)]
                details = event.details or {}
                runs.append({
                    "load_to_ready_s": event.duration_s or 0.0,
                    "phases": details.get("load_phases", {}),
                    "compile_cache": details.get("compile_cache"),
                    "first_ms": first100[0] * 1e3,
                    "first100_p50_ms": percentile(first100, 50) * 1e3,
                    "first100_p99_ms": percentile(first100, 99) * 1e3,
                    "steady_p50_ms": percentile(later, 50) * 1e3,
                })
                await manager.unload(model, trigger="bench", force=True)
    result: dict[str, Any] = {
        key: round(median([r[key] for r in runs]), 3)
        for key in ("load_to_ready_s", "first_ms", "first100_p50_ms", "first100_p99_ms",
                    "steady_p50_ms")}
    phases = sorted({p for r in runs for p in r["phases"]})
    result["load_phases_s"] = {
        p: round(median([r["phases"].get(p, 0.0) for r in runs]), 3) for p in phases}
    steady_p50 = result["steady_p50_ms"]
    for key in ("first_ms", "first100_p50_ms", "first100_p99_ms"):
        result[f"{key.removesuffix('_ms')}_over_steady_p50"] = round(result[key] / steady_p50, 2)
    result["compile_cache"] = [r["compile_cache"] for r in runs if r["compile_cache"]]
    result["runs"] = repeats
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steady", type=int, default=200)
    parser.add_argument("--formats", default=",".join(MODELS))
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repository = build_repository(Path(tmp) / "repository", args.device)
        for fmt in args.formats.split(","):
            results[fmt] = await measure(fmt, args.repeats, args.steady, Path(tmp) / fmt,
                                         repository)
    targets: dict[str, Any] = {}
    if {"compile_cached", "compile_uncached"} <= results.keys():
        ratio = (results["compile_cached"]["load_to_ready_s"]
                 / results["compile_uncached"]["load_to_ready_s"])
        targets["compile_cached_load_over_uncached"] = round(ratio, 2)
        targets["compile_cached_load_le_0.5x_uncached"] = ratio <= 0.5
    if {"aoti", "torchscript"} <= results.keys():
        ratio = results["aoti"]["load_to_ready_s"] / results["torchscript"]["load_to_ready_s"]
        targets["aoti_load_over_torchscript"] = round(ratio, 2)
        targets["aoti_load_le_torchscript"] = ratio <= 1.0
    print(json.dumps({"bench": "formats", "device": args.device, "torch": torch.__version__,
                      "machine": machine(), "formats": results, "targets": targets}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
