from __future__ import annotations

import time
from typing import Any, cast

import numpy as np
import pytest

from controlplane.tensors import bf16_bytes, encode_bytes_elements
from controlplane.triton.client import TritonClient
from controlplane.triton.repository import ModelSpec, TensorSpec
from controlplane.warmup.batch_stats import (
    BatchStatsTracker,
    executions_by_batch,
    warmup_figures,
)
from controlplane.warmup.configs import WarmupStore
from controlplane.warmup.probe import expected_warmup_executions, sample_request, settled


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ([1.0, 1.0, 1.0], False),  # fewer than the window
        ([5.0, 1.0, 1.05, 0.95, 1.0], False),
        ([5.0, 1.0, 1.05, 0.95, 1.0, 1.02], True),  # the last 5 settled
        ([1.0, 1.0, 1.0, 1.0, 1.3], False),
    ],
)
def test_settled(latencies: list[float], expected: bool) -> None:
    assert settled(latencies, 5, 0.10) is expected


STATS = {"model_stats": [{"batch_stats": [
    {"batch_size": "1", "compute_input": {"count": "6", "ns": "1000000"},
     "compute_infer": {"count": "6", "ns": "30000000"},
     "compute_output": {"count": "6", "ns": "2000000"}},
    {"batch_size": "4", "compute_input": {"count": "3", "ns": "0"},
     "compute_infer": {"count": "3", "ns": "9000000"},
     "compute_output": {"count": "3", "ns": "0"}},
]}]}


def test_statistics_parsing() -> None:
    assert executions_by_batch(STATS) == {1: 6, 4: 3}
    assert warmup_figures(STATS) == {"warmup_executions": 9, "warmup_s": 0.042}


def _spec(max_batch: int) -> ModelSpec:
    return ModelSpec(
        name="m", backend="torchscript", max_batch_size=max_batch,
        inputs=(TensorSpec("ids", "TYPE_INT64", (-1,)), TensorSpec("x", "TYPE_FP32", (2,))),
        outputs=(), instance_kind="KIND_CPU", instance_count=1, dynamic_batching=True,
        preferred_batch_sizes=(), parameters={}, config={})


def test_probe_requests_follow_the_samples() -> None:
    ids = np.array([7, 8, 9], dtype=np.int64)
    files = {"warmup/ids.bin": ids.tobytes()}
    sample = {"name": "a", "batch_size": 4, "count": 3, "inputs": {
        "ids": {"data_type": "TYPE_INT64", "dims": ["3"], "input_data_file": "ids.bin"},
        "x": {"data_type": "TYPE_FP32", "dims": ["2"], "zero_data": True}}}
    first = sample_request(sample, files, _spec(8))
    assert [(t.name(), t.shape(), t.datatype()) for t in first] == [
        ("ids", [4, 3], "INT64"), ("x", [4, 2], "FP32")]
    # the file's one batch element, repeated per row: what the model really gets
    raw = first[0]._get_content()
    assert raw == ids.tobytes() * 4
    unbatched = sample_request(sample, files, _spec(0))
    assert [t.shape() for t in unbatched] == [[3], [2]]


def test_probe_requests_for_bf16_fp16_and_bytes() -> None:
    bf16 = np.array([1.5, -2.0], dtype=np.float32)
    files = {"warmup/b.bin": bf16_bytes(bf16),
             "warmup/s.bin": encode_bytes_elements([b"hello"])}
    sample = {"name": "s", "batch_size": 2, "inputs": {
        "b": {"data_type": "TYPE_BF16", "dims": ["2"], "input_data_file": "b.bin"},
        "z": {"data_type": "TYPE_BF16", "dims": ["3"], "zero_data": True},
        "h": {"data_type": "TYPE_FP16", "dims": ["1"], "zero_data": True},
        "s": {"data_type": "TYPE_STRING", "dims": ["1"], "input_data_file": "s.bin"}}}
    tensors = {t.name(): t for t in sample_request(sample, files, _spec(8))}
    assert {n: (t.shape(), t.datatype()) for n, t in tensors.items()} == {
        "b": ([2, 2], "BF16"), "z": ([2, 3], "BF16"), "h": ([2, 1], "FP16"),
        "s": ([2, 1], "BYTES")}
    assert tensors["b"]._get_content() == files["warmup/b.bin"] * 2  # exact BF16 bits
    assert tensors["z"]._get_content() == b"\0" * 12
    with pytest.raises(ValueError, match="BYTES input 'x' without data"):
        sample_request({"batch_size": 1, "inputs": {
            "x": {"data_type": "TYPE_STRING", "dims": ["1"], "zero_data": True}}}, {}, _spec(8))


def test_expected_warmup_executions_count_every_instance_and_own_samples() -> None:
    spec = _spec(8)
    applied = [{"count": 3}, {"count": 0}]
    assert expected_warmup_executions(applied, spec) == 4
    assert expected_warmup_executions(applied, spec, own=[{"count": 2}]) == 6
    assert expected_warmup_executions([], spec) == 0


class _LaggingStatistics:
    """Triton's statistics as read right after the last probe's response: the probe's
    execution shows up a few reads later. A stand-in because the real lag (microseconds, after
    the response leaves the backend) cannot be produced on demand against a live Triton."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    async def statistics(self, model: str) -> dict[str, Any]:
        n = self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]
        return {"model_stats": [{"batch_stats": [
            {"batch_size": "1", "compute_infer": {"count": str(n), "ns": "0"}}]}]}


async def test_baseline_waits_for_the_last_probe_to_be_counted() -> None:
    tracker = BatchStatsTracker(cast(TritonClient, _LaggingStatistics([7, 7, 8])),
                                cast(WarmupStore, None))
    await tracker.reset("m", expected=8)
    assert tracker._baseline["m"] == {1: 8}


async def test_baseline_gives_up_waiting_after_its_settle_time() -> None:
    tracker = BatchStatsTracker(cast(TritonClient, _LaggingStatistics([3])),
                                cast(WarmupStore, None))
    t0 = time.monotonic()
    await tracker.reset("m", expected=5, settle_s=0.05)
    assert tracker._baseline["m"] == {1: 3} and time.monotonic() - t0 < 1.0
