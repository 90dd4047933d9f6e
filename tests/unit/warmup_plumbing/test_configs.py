from __future__ import annotations

from controlplane.store.database import Database
from controlplane.warmup.configs import WarmupStore, diff
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
