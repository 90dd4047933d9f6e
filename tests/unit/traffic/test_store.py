from __future__ import annotations

from controlplane.gateway.wire import InputHeader
from controlplane.store.database import Database
from controlplane.traffic.observation import OK, Observation, signature_of
from controlplane.traffic.store import Retention, TrafficStore

T0 = 1_800_000_000.0  # a minute boundary: 1_800_000_000 / 60 = 30_000_000

IDS = InputHeader("ids", "INT64", (1, 20))
CTX = InputHeader("ctx", "FP32", (1, 32))
CTX8 = InputHeader("ctx", "FP32", (8, 32))
IDS8 = InputHeader("ids", "INT64", (8, 20))


def obs(model: str, at: float, inputs: tuple[InputHeader, ...] = (IDS, CTX), *,
        outcome: str = OK, cold: bool = False, latency: float | None = 0.002) -> Observation:
    return Observation(model, "", inputs, at, latency, outcome, cold, 1.5 if cold else None)


def test_signature_is_order_independent_with_batch() -> None:
    a, b = signature_of((IDS, CTX)), signature_of((CTX, IDS))
    assert a == b
    assert a.text == "ctx:FP32:1x32,ids:INT64:1x20"
    assert a.batch_size == 1
    assert signature_of((InputHeader("x", "FP32", (1, 4)), InputHeader("y", "FP32", (2,)))
                        ).batch_size is None


def test_write_rolls_up_usage_and_shapes_across_batches(database: Database) -> None:
    store = TrafficStore(database, "default")
    store.write([obs("m", T0 + 1, cold=True), obs("m", T0 + 2), obs("m", T0 + 61, (IDS8, CTX8)),
                 obs("m", T0 + 62, outcome="INVALID_ARGUMENT", latency=0.001),
                 obs("other", T0 + 3)])
    store.write([obs("m", T0 + 30, latency=0.010)])

    usage = store.usage("m", T0, T0 + 120)
    assert [(u.minute, u.requests, u.errors, u.cold_starts) for u in usage] == [
        (30_000_000, 3, 0, 1), (30_000_001, 2, 1, 0)]
    assert usage[0].latency_sum_ms == 14.0 and usage[0].latency_max_ms == 10.0

    shapes = {s.signature: s for s in store.shapes("m")}
    assert {k: v.count for k, v in shapes.items()} == {
        "ctx:FP32:1x32,ids:INT64:1x20": 3, "ctx:FP32:8x32,ids:INT64:8x20": 1}
    one = shapes["ctx:FP32:1x32,ids:INT64:1x20"]
    assert (one.first_seen, one.last_seen, one.batch_size) == (T0 + 1, T0 + 30, 1)
    assert one.inputs[0] == {"name": "ctx", "datatype": "FP32", "shape": [1, 32]}

    rows = store.requests("m")
    assert len(rows) == 5 and rows[0].arrived_at == T0 + 62
    assert [r.cold for r in rows if r.wait_ms] == [True]
    assert store.arrivals(T0 + 2, ["m"]) == [("m", T0 + 2), ("m", T0 + 30), ("m", T0 + 61),
                                             ("m", T0 + 62)]


def test_payload_sample_rows_slice_the_raw_inputs(database: Database) -> None:
    store = TrafficStore(database, "default")
    raw = b"HEADER" + b"A" * 8 + b"B" * 4
    o = obs("m", T0, (InputHeader("a", "INT64", (1, 1)), InputHeader("b", "FP32", (1, 1))))
    store.write([o._replace(payload=(raw, ((6, 14), (14, 18))))])
    [sample] = store.samples("m")
    assert sample.data == b"A" * 8 + b"B" * 4
    assert [(i["name"], i["offset"], i["size"]) for i in sample.inputs] == [
        ("a", 0, 8), ("b", 8, 4)]
    assert store.sample_totals() == {("m", sample.signature): (1, 12)}


def test_prune_applies_each_retention(database: Database) -> None:
    store = TrafficStore(database, "default")
    old, new = obs("m", T0), obs("m", T0 + 10 * 86400, (IDS8, CTX8))
    store.write([old._replace(payload=(b"xx", ((0, 1), (1, 2)))), new])
    removed = store.prune(T0 + 10 * 86400 + 1, Retention(
        requests_s=86400, usage_s=86400, shapes_s=86400, samples_s=86400))
    assert removed == {"requests": 1, "usage_minutes": 1, "shape_stats": 1,
                       "payload_samples": 1}
    assert [s.signature for s in store.shapes("m")] == ["ctx:FP32:8x32,ids:INT64:8x20"]
