"""Shared bench helpers: an in-process stack on the embedded Triton, valid inputs, stats."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from controlplane.config import Settings, load_settings
from controlplane.fleet.provider import ConfiguredProvider
from controlplane.lifecycle.manager import ModelManager
from controlplane.store.database import Database
from controlplane.store.lifecycle import LifecycleStore
from controlplane.triton.repository import ModelRepository, ModelSpec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_MODELS = ["shortform_ranker", "longform_ranker", "premium_ranker", "query_encoder",
                  "thumbnail_scorer"]
#: a typical length for each variable dim, per model input
TYPICAL_LENGTHS = {"watch_history": 50, "tokens": 12}

_NUMPY = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64,
          "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def sample_inputs(spec: ModelSpec, batch: int = 1, lengths: dict[str, int] | None = None,
                  seed: int = 0) -> list[grpcclient.InferInput]:
    """Valid inputs: ids inside the configured range, finite floats."""
    rng = np.random.default_rng(seed)
    lengths = {**TYPICAL_LENGTHS, **(lengths or {})}
    inputs = []
    for t in spec.inputs:
        dims = [lengths.get(t.name, 8) if d == -1 else d for d in t.dims]
        shape = [batch, *dims] if spec.max_batch_size > 0 else dims
        dtype = _NUMPY[t.datatype]
        value_range = spec.parameters.get(f"input_range.{t.name}")
        if value_range:
            lo, hi = (int(v) for v in value_range.split(":"))
            array = rng.integers(lo, hi, size=shape, dtype=dtype)
        else:
            array = rng.standard_normal(size=shape).astype(dtype)
        inp = grpcclient.InferInput(t.name, shape, t.datatype)
        inp.set_data_from_numpy(array)
        inputs.append(inp)
    return inputs


def timed_infer(client: grpcclient.InferenceServerClient, model: str,
                inputs: Sequence[grpcclient.InferInput]) -> float:
    """One inference; seconds."""
    t0 = time.perf_counter()
    client.infer(model, list(inputs), client_timeout=60)
    return time.perf_counter() - t0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(np.ceil(q / 100 * len(ordered))) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def example_repository(device: str, scratch: Path) -> Path:
    """The example models as a user on ``device`` (cpu or gpu) would configure them.

    ``cpu``: the repository as shipped. ``gpu``: a copy in ``scratch`` whose configs say
    KIND_GPU (weights hard-linked), which is how a GPU user writes them; warmctl keeps a
    model's own kind unless the GPU budget forces a move.
    """
    source = ROOT / "model_repository"
    if device == "cpu":
        return source
    if device != "gpu":
        raise ValueError(f"device must be cpu or gpu, not {device!r}")
    target = scratch / "model_repository_gpu"
    for model in EXAMPLE_MODELS:
        (target / model / "1").mkdir(parents=True, exist_ok=True)
        config = (source / model / "config.pbtxt").read_text()
        (target / model / "config.pbtxt").write_text(config.replace("KIND_CPU", "KIND_GPU"))
        weights = source / model / "1" / "model.pt"
        link = target / model / "1" / "model.pt"
        if not link.exists():
            try:
                os.link(weights, link)
            except OSError:
                shutil.copy(weights, link)
    return target


def bench_settings(state_dir: Path, *, repository: Path | None = None,
                   **overrides: Any) -> Settings:
    return load_settings(data_dir=state_dir,
                         model_repository=repository or ROOT / "model_repository",
                         backends_dir=ROOT / "triton_backends", **overrides)


@contextlib.asynccontextmanager
async def embedded_stack(state_dir: Path, *, repository: Path | None = None,
                         **overrides: Any) -> AsyncIterator[ModelManager]:
    """Embedded Triton + lifecycle manager on a fresh SQLite file (no admin API, no gateway)."""
    settings = bench_settings(state_dir, repository=repository, **overrides)
    database = Database(settings.db_url)
    database.migrate()
    name, spec = next(iter(settings.fleet_instances().items()))
    instance = await ConfiguredProvider(settings, spec.provider).open(name, spec)
    manager = ModelManager(instance=instance, repository=ModelRepository(settings.model_repository),
                           store=LifecycleStore(database, instance.name))
    try:
        await manager.start()
        yield manager
    finally:
        await manager.close()
        await instance.close()
        database.close()
