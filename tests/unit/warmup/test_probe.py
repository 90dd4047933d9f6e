"""Which probe requests follow a load: proofs in the warm-up's form, then settling."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from controlplane.config import ProbeOptions, WarmupOptions
from controlplane.traffic.store import TrafficStore
from controlplane.triton.client import TritonClient
from controlplane.triton.repository import ModelRepository
from controlplane.warmup.batch_stats import BatchStatsTracker
from controlplane.warmup.configs import StoredWarmup, WarmupStore
from controlplane.warmup.preparer import Applied, WarmupPreparer
from controlplane.warmup.probe import WarmupProbe
from tests.unit.warmup.helpers import make_spec


def _sample(name: str, batch: int) -> dict[str, Any]:
    return {"name": name, "batch_size": batch, "count": 3, "inputs": {
        "x": {"data_type": "TYPE_FP32", "dims": ["4"], "zero_data": True}}}


def _probe(shapes: int = 3) -> WarmupProbe:
    # choosing requests reads only the options: no database, traffic or Triton behind it
    preparer = WarmupPreparer(repository=cast(ModelRepository, None),
                              warmups=cast(WarmupStore, None),
                              traffic=cast(TrafficStore, None), options=WarmupOptions())
    return WarmupProbe(preparer=preparer, client=cast(TritonClient, None),
                       options=ProbeOptions(shapes=shapes),
                       batch_stats=cast(BatchStatsTracker, None))


def _stored(*samples: dict[str, Any]) -> StoredWarmup:
    return StoredWarmup(model="m", version=1, created_at=datetime.now(UTC), reason="r",
                        default=False, coverage=1.0, samples=list(samples),
                        covered=frozenset(), notes=[], files={})


def test_pending_samples_are_proven_in_the_warmup_form_then_applied_ones_settle() -> None:
    spec = make_spec([("x", "FP32", [4])])
    b1, b4, applied = _sample("s0_b1", 1), _sample("s1_b4", 4), _sample("s2_b2", 2)
    stored = _stored(b1, b4, applied)
    entry = Applied(spec, stored, applied=[applied], pending=[b1, b4])
    requests, notes = _probe()._requests(entry)
    assert notes == []
    # batch 4 to prove: 4 concurrent requests of batch 1, as Triton's warm-up hands them over
    assert [(r.label, r.copies, r.inputs[0].shape(), r.proves is not None)
            for r in requests] == [
        ("s0_b1 (to prove)", 1, [1, 4], True), ("s1_b4 (to prove)", 4, [1, 4], True),
        ("s2_b2", 1, [2, 4], False)]
    assert requests[0].proves == stored.sample_key(b1)


def test_probe_only_samples_and_the_settle_limit() -> None:
    spec = make_spec([("x", "FP32", [4])], dynamic_batching=False)
    samples = [_sample(f"s{i}_b{i + 1}", i + 1) for i in range(4)]
    entry = Applied(spec, _stored(*samples), applied=samples[:1], probe_only=samples[1:])
    requests, _ = _probe(shapes=2)._requests(entry)
    # one request of the whole batch, as clients send it; at most ``shapes`` of them
    assert [(r.label, r.copies, r.inputs[0].shape()) for r in requests] == [
        ("s0_b1", 1, [1, 4]), ("s1_b2", 1, [2, 4])]


def test_no_traffic_one_default_probe_or_none() -> None:
    floats = Applied(make_spec([("x", "FP32", [-1])]))
    [request], _ = _probe()._requests(floats)
    assert request.label == "default s0_b1" and request.inputs[0].shape() == [1, 16]
    ids = Applied(make_spec([("ids", "INT64", [4])]))
    requests, notes = _probe()._requests(ids)
    assert requests == [] and "no known valid range" in notes[0]
