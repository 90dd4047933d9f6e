"""Value ranges of integer inputs, learned from served requests (no Triton needed)."""

from __future__ import annotations

import numpy as np

from controlplane.gateway.wire import InputHeader
from controlplane.store.database import Database
from controlplane.traffic.observation import OK, Observation
from controlplane.traffic.ranges import RangeSampler, observed_ranges
from controlplane.traffic.store import TrafficStore

IDS = InputHeader("ids", "INT64", (1, 4))
CTX = InputHeader("ctx", "FP32", (1, 2))
SMALL = InputHeader("small", "UINT8", (1, 3))


def request(ids: list[int], ctx: list[float], small: list[int]) -> tuple[bytes, tuple[
        tuple[int, int], ...]]:
    """A raw request: some header bytes, then each input's raw bytes, with their spans."""
    parts = [b"\x0a\x03hdr", np.array(ids, np.int64).tobytes(),
             np.array(ctx, np.float32).tobytes(), np.array(small, np.uint8).tobytes()]
    spans, pos = [], len(parts[0])
    for part in parts[1:]:
        spans.append((pos, pos + len(part)))
        pos += len(part)
    return b"".join(parts), tuple(spans)


def served(model: str, raw: tuple[bytes, tuple[tuple[int, int], ...]], *,
           outcome: str = OK, as_payload: bool = False) -> Observation:
    o = Observation(model, "", (IDS, CTX, SMALL), 1000.0, 0.001, outcome, False, None)
    return o._replace(payload=raw) if as_payload else o._replace(witness=raw)


def test_ranges_come_from_integer_inputs_of_served_requests_only() -> None:
    ranges = observed_ranges([
        served("m", request([3, 7, 50, 9], [-1.0, 2.0], [0, 255, 4])),
        served("m", request([1, 2, 3, 4], [0.0, 0.0], [9, 9, 9]), as_payload=True),
        # a failed request says nothing about valid values
        served("m", request([-99, 0, 0, 10**9], [0.0, 0.0], [0, 0, 0]),
               outcome="INVALID_ARGUMENT"),
        Observation("m", "", (IDS,), 1.0, 0.001, OK, False, None),  # no bytes: nothing read
    ])
    assert ranges == {("m", "ids"): (1, 50, 2), ("m", "small"): (0, 255, 2)}


def test_spans_that_do_not_fit_their_datatype_are_skipped() -> None:
    raw, spans = request([5, 6, 7, 8], [0.0, 0.0], [1, 2, 3])
    broken = (raw, ((len(raw) - 3, len(raw) + 40), spans[1], spans[2]))
    assert observed_ranges([served("m", broken)]) == {("m", "small"): (1, 3, 1)}


def test_the_sampler_picks_one_request_in_every() -> None:
    sampler = RangeSampler(4)
    assert [sampler.wants() for _ in range(8)] == [False, False, False, True] * 2
    assert not any(RangeSampler(0).wants() for _ in range(10))


def test_store_keeps_the_widest_range_per_input_and_never_the_bytes(
        database: Database) -> None:
    store = TrafficStore(database, "default")
    store.write([served("m", request([3, 7, 50, 9], [0.0, 0.0], [4, 4, 4]))])
    store.write([served("m", request([1, 20, 20, 20], [0.0, 0.0], [4, 4, 4])),
                 served("other", request([100, 100, 100, 100], [0.0, 0.0], [1, 1, 1]))])
    assert store.value_ranges("m") == {"ids": (1, 51), "small": (4, 5)}
    assert store.value_ranges("other") == {"ids": (100, 101), "small": (1, 2)}
    assert store.samples("m") == []  # a witness is read, not kept
