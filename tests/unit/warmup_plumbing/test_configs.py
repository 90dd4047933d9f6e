from __future__ import annotations

from controlplane.store.database import Database
from controlplane.warmup.configs import (
    FAILED,
    PROVEN,
    REJECTED,
    WarmupStore,
    diff,
    sample_key,
)
from controlplane.warmup.types import InputData, WarmupPlan, WarmupSample


def plan(dims: int, *, files: dict[str, bytes] | None = None) -> WarmupPlan:
    source = "file" if files else "zero"
    sample = WarmupSample(
        name=f"x{dims}", batch_size=2, count=3, share=1.0,
        inputs={"x": InputData("FP32", (dims,), source,  # type: ignore[arg-type]
                               file="x.bin" if files else None)})
    return WarmupPlan(samples=(sample,), files=files or {}, coverage=0.97, default=False,
                      notes=("note",), covered=frozenset({f"x:FP32:1x{dims}"}))


def test_versions_dedupe_and_files(database: Database) -> None:
    store = WarmupStore(database)
    assert store.latest("m") is None
    v1 = store.save("m", plan(4), "first load")
    assert (v1.version, v1.reason, v1.coverage) == (1, "first load", 0.97)
    assert v1.samples == [{"name": "x4", "batch_size": 2, "count": 3, "inputs": {
        "x": {"data_type": "TYPE_FP32", "dims": ["4"], "zero_data": True}}}]
    assert store.save("m", plan(4), "again").version == 1  # identical: no new version
    v2 = store.save("m", plan(8, files={"warmup/x.bin": b"\0" * 32}), "drift")
    assert v2.version == 2 and v2.files == {"warmup/x.bin": b"\0" * 32}
    assert [v.version for v in store.versions("m")] == [1, 2]
    assert store.get("m", 1).covered == frozenset({"x:FP32:1x4"})
    assert store.latest("other") is None


def test_pbtxt_and_diff(database: Database) -> None:
    store = WarmupStore(database)
    v1 = store.save("m", plan(4), "first load")
    v2 = store.save("m", plan(8, files={"warmup/x.bin": b"\0" * 32}), "drift")
    text = v2.pbtxt()
    assert text.startswith("# warm-up config v2 of m: drift\n")
    assert "# file warmup/x.bin: 32 bytes" in text
    assert 'input_data_file: "x.bin"' in text and "batch_size: 2" in text
    changes = diff(v1, v2)
    assert changes.startswith("--- v1\n+++ v2\n")
    assert "-      dims: 4" in changes and "+      dims: 8" in changes
    assert diff(None, v1).startswith("--- /dev/null\n+++ v1\n")


def test_batch_stats_accumulate(database: Database) -> None:
    store = WarmupStore(database)
    store.add_batch_stats("m", {1: 5, 4: 2, 8: 0}, 100.0)
    store.add_batch_stats("m", {1: 3}, 200.0)
    assert store.batch_stats("m") == {1: 8, 4: 2}
    assert store.batch_stats("other") == {}


def test_sample_keys_name_the_request_not_the_sample() -> None:
    zero = {"name": "s0_b2", "batch_size": 2, "count": 3, "inputs": {
        "x": {"data_type": "TYPE_FP32", "dims": ["4"], "zero_data": True}}}
    renamed = {**zero, "name": "s7_b2", "count": 1}
    from_file = {**zero, "inputs": {"x": {"data_type": "TYPE_FP32", "dims": ["4"],
                                          "input_data_file": "x.bin"}}}
    assert sample_key(zero, {}) == sample_key(renamed, {})
    assert sample_key(zero, {}) != sample_key({**zero, "batch_size": 4}, {})
    one, two = {"warmup/x.bin": b"\1" * 16}, {"warmup/x.bin": b"\2" * 16}
    assert sample_key(from_file, one) != sample_key(from_file, two)
    assert sample_key(from_file, one) != sample_key(zero, {})


def test_proofs_and_rejection_are_kept(database: Database) -> None:
    store = WarmupStore(database)
    store.set_proofs("m", {"a": (PROVEN, None), "b": (REJECTED, "refused"),
                           "c": (FAILED, "x" * 10_000)})
    store.set_proofs("m", {"a": (FAILED, "later"), "b": (PROVEN, None)})
    # a rejection by Triton is final; other states are replaced
    assert store.proofs("m") == {"a": FAILED, "b": REJECTED, "c": FAILED}
    assert store.proofs("other") == {}
    v1 = store.save("m", plan(4), "first load")
    store.reject("m", v1.version, "failed to run warmup sample 'x4'")
    rejected = store.latest("m")
    assert rejected is not None and rejected.rejected_reason == (
        "failed to run warmup sample 'x4'")
    assert rejected.pbtxt().splitlines()[1].startswith("# REJECTED by Triton at ")
    v2 = store.save("m", plan(8), "drift")
    assert v2.version == 2 and v2.rejected_at is None
    # identical to the rejected one: that one comes back, still rejected
    again = store.save("m", plan(4), "drift")
    assert (again.version, again.rejected_at is not None) == (1, True)
    assert again.sample_states({again.sample_key(again.samples[0]): REJECTED}) == {
        "x4": "rejected"}
    assert v2.sample_states({}) == {"x8": "pending"}
