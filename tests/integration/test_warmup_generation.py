"""Generated warm-up against a real tritonserver: every example model loads with its plan, the
warm-up runs exactly as planned (Triton's statistics), and probes at the warmed shapes succeed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from controlplane.errors import ModelLoadFailed, TritonUnavailable
from controlplane.triton.client import TritonClient
from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.process import TritonProcess
from controlplane.triton.repository import ModelRepository, ModelSpec
from controlplane.warmup.data import probe_inputs
from controlplane.warmup.generate import default_probe, generate_warmup
from controlplane.warmup.types import PayloadSampleData, ShapeCount, TensorShape, WarmupPlan
from tests.conftest import ROOT
from tests.support.repository import add_example

EXAMPLE_MODELS = ["longform_ranker", "premium_ranker", "query_encoder", "shortform_ranker",
                  "thumbnail_scorer"]
#: client batch size -> relative weight in the synthetic traffic
BATCH_WEIGHTS = {1: 6, 2: 3, 4: 1}


def synthetic_histogram(spec: ModelSpec) -> list[ShapeCount]:
    """Long-tailed lengths 1..40 for variable dims (fixed dims as configured), batches 1/2/4."""
    variable = any(-1 in t.dims for t in spec.inputs)
    rows = []
    for length in range(1, 41) if variable else [1]:
        for batch, weight in BATCH_WEIGHTS.items():
            inputs = tuple(
                TensorShape(t.name, t.datatype,
                            (batch, *(length if d == -1 else d for d in t.dims)))
                for t in spec.inputs)
            rows.append(ShapeCount(inputs, weight * (400 // length)))
    return rows


def expected_counts(plan: WarmupPlan, spec: ModelSpec) -> tuple[int, int, dict[int, int]]:
    """(inference_count, execution_count, executions per batch size) of the warm-up alone.

    A sample of batch B runs ``count`` times as one execute of B batch-1 requests, on every
    instance.
    """
    inferences = executions = 0
    by_batch: dict[int, int] = {}
    for sample in plan.samples:
        inferences += sample.batch_size * sample.count * spec.instance_count
        executions += sample.count * spec.instance_count
        by_batch[sample.batch_size] = (by_batch.get(sample.batch_size, 0)
                                       + sample.count * spec.instance_count)
    return inferences, executions, by_batch


async def load_plan(client: TritonClient, repo: Path, spec: ModelSpec,
                    plan: WarmupPlan) -> None:
    files = None
    if plan.files:
        # a file override replaces the whole model directory: weights travel again
        files = {**ModelRepository(repo).files(spec.name), **plan.files}
    await client.load(spec.name, config={**spec.config, "model_warmup": plan.model_warmup()},
                      files=files, timeout_s=60)


async def assert_warmup_ran(client: TritonClient, spec: ModelSpec, plan: WarmupPlan) -> None:
    stats: dict[str, Any] = (await client.statistics(spec.name))["model_stats"][0]
    inferences, executions, by_batch = expected_counts(plan, spec)
    assert int(stats["inference_count"]) == inferences
    assert int(stats["execution_count"]) == executions
    assert {int(b["batch_size"]): int(b["compute_infer"]["count"])
            for b in stats.get("batch_stats", [])} == by_batch


def infer_probes(url: str, spec: ModelSpec, plan: WarmupPlan) -> None:
    with grpcclient.InferenceServerClient(url) as triton:
        for sample, arrays in zip(plan.samples, probe_inputs(plan, spec), strict=True):
            inputs = []
            for name, array in arrays.items():
                tensor = grpcclient.InferInput(name, list(array.shape),
                                               sample.inputs[name].datatype)
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            result = triton.infer(spec.name, inputs, client_timeout=30)
            for output in spec.outputs:
                values = result.as_numpy(output.name)
                assert values is not None and values.shape[0] == sample.batch_size
                assert np.all(np.isfinite(values)), (sample.name, output.name)


@pytest.mark.parametrize("model", EXAMPLE_MODELS)
async def test_generated_warmup_loads_and_runs_as_planned(
    repo: Path, triton: TritonProcess, client: TritonClient, model: str,
) -> None:
    add_example(repo, model)
    spec = ModelRepository(repo).spec(model)
    traffic = generate_warmup(spec, synthetic_histogram(spec))
    default = default_probe(spec)  # before traffic: a probe request, never a warm-up sample
    assert traffic.coverage >= 0.95 and traffic.samples and not traffic.files
    assert not isinstance(default, str) and len(default.samples) == 1 and not default.files
    await load_plan(client, repo, spec, traffic)
    await assert_warmup_ran(client, spec, traffic)
    await asyncio.to_thread(infer_probes, triton.grpc_url, spec, traffic)
    await asyncio.to_thread(infer_probes, triton.grpc_url, spec, default)


async def test_random_data_fails_the_load_where_ours_loads(
    repo: Path, tmp_path: Path, triton: TritonProcess, client: TritonClient,
) -> None:
    add_example(repo, "shortform_ranker")
    spec = ModelRepository(repo).spec("shortform_ranker")
    random_ids = [{"name": "random_ids", "batch_size": 1, "count": 1, "inputs": {
        "user_history": {"data_type": "TYPE_INT64", "dims": ["20"], "random_data": True},
        "context": {"data_type": "TYPE_FP32", "dims": ["32"], "zero_data": True}}}]
    # On a server of its own: a failing warm-up sample has also crashed tritonserver 2.51 here
    # (SIGSEGV; now and then at batch 1, every time at batch 2 and more).
    scratch = tmp_path / "random_data"
    distribution = TritonDistribution.locate()
    backends = distribution.assemble_backend_dir(ROOT / "triton_backends", scratch / "backends")
    other = TritonProcess(distribution, repo, backends, scratch / "triton.log", stop_timeout_s=5)
    other.start()  # on the loop's (main) thread: the server dies with the thread that forked it
    other_client = TritonClient(other.grpc_url, call_timeout_s=5, load_timeout_s=60)
    try:
        await other.wait_live()
        with pytest.raises((ModelLoadFailed, TritonUnavailable)) as failure:
            await other_client.load(spec.name,
                                    config={**spec.config, "model_warmup": random_ids})
        if isinstance(failure.value, ModelLoadFailed):
            assert "failed to run warmup sample 'random_ids'" in failure.value.message
            assert "not in the valid range" in failure.value.message
            assert not await other_client.is_model_ready(spec.name)
    finally:
        await other_client.close()
        returncode = other.stop()
    if isinstance(failure.value, TritonUnavailable):
        assert returncode not in (None, 0), "Triton went away without crashing"

    plan = generate_warmup(spec, synthetic_histogram(spec))
    await load_plan(client, repo, spec, plan)
    await assert_warmup_ran(client, spec, plan)


async def test_plans_with_files_load_through_the_file_override(
    repo: Path, triton: TritonProcess, client: TritonClient,
) -> None:
    add_example(repo, "query_encoder")
    spec = ModelRepository(repo).spec("query_encoder")
    # ids that exclude 0: zero_data would be wrong, so every sample needs a file
    plan = generate_warmup(spec, synthetic_histogram(spec), value_ranges={"tokens": (1000, 30000)})
    assert plan.files and all(s.inputs["tokens"].source == "file" for s in plan.samples)

    # Triton really reads the files: the same config without them fails the load
    with pytest.raises(ModelLoadFailed):
        await client.load(spec.name, files=ModelRepository(repo).files(spec.name),
                          config={**spec.config, "model_warmup": plan.model_warmup()})
    await load_plan(client, repo, spec, plan)
    await assert_warmup_ran(client, spec, plan)
    await asyncio.to_thread(infer_probes, triton.grpc_url, spec, plan)


async def test_recorded_payloads_warm_with_their_real_bytes(
    repo: Path, triton: TritonProcess, client: TritonClient,
) -> None:
    add_example(repo, "shortform_ranker")
    spec = ModelRepository(repo).spec("shortform_ranker")
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 100_000, size=(2, 20), dtype=np.int64)
    context = rng.standard_normal((2, 32)).astype(np.float32)
    sample = PayloadSampleData(
        {"user_history": TensorShape("user_history", "INT64", (2, 20)),
         "context": TensorShape("context", "FP32", (2, 32))},
        {"user_history": ids.tobytes(), "context": context.tobytes()})
    plan = generate_warmup(spec, synthetic_histogram(spec), samples=[sample])
    assert set(plan.files.values()) == {ids[0].tobytes(), context[0].tobytes()}
    await load_plan(client, repo, spec, plan)
    await assert_warmup_ran(client, spec, plan)
    await asyncio.to_thread(infer_probes, triton.grpc_url, spec, plan)
