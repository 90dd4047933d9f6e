from __future__ import annotations

from collections.abc import Sequence

import pytest

from controlplane.gateway.wire import InputHeader
from controlplane.store.database import Database
from controlplane.traffic.observation import Observation
from controlplane.traffic.recorder import PayloadSampler, TrafficRecorder
from controlplane.traffic.store import TrafficStore

X1 = (InputHeader("x", "FP32", (1, 4)),)
X2 = (InputHeader("x", "FP32", (2, 4)),)


def obs(model: str = "m", inputs: tuple[InputHeader, ...] = X1, at: float = 1e9) -> Observation:
    return Observation(model, "", inputs, at, 0.001, "OK", False, None)


async def test_flush_writes_everything_and_notifies(database: Database) -> None:
    recorder = TrafficRecorder(TrafficStore(database, "default"), flush_interval_s=3600)
    seen: list[int] = []
    recorder.listeners.append(lambda batch: seen.append(len(batch)))
    await recorder.start()
    for i in range(250):
        recorder.record(obs(at=1e9 + i))
    await recorder.stop()  # the final flush, without waiting for the interval
    assert seen == [250]
    assert sum(u.requests for u in recorder.store.usage("m", 0, 2e9)) == 250


async def test_full_buffer_counts_what_it_drops(database: Database) -> None:
    recorder = TrafficRecorder(TrafficStore(database, "default"), max_buffer=10)
    for _ in range(15):
        recorder.record(obs())
    assert recorder.dropped == 5
    assert await recorder.flush() == 10


class FailingStore(TrafficStore):
    def __init__(self, database: Database) -> None:
        super().__init__(database, "default")
        self.fail = True

    def write(self, observations: Sequence[Observation]) -> None:
        if self.fail:
            raise OSError("disk full")
        super().write(observations)


async def test_a_failed_write_keeps_the_batch_for_the_next_flush(database: Database) -> None:
    store = FailingStore(database)
    recorder = TrafficRecorder(store)
    recorder.record(obs())
    recorder.record(obs())
    with pytest.raises(OSError):
        await recorder.flush()
    store.fail = False
    recorder.record(obs())
    assert await recorder.flush() == 3


def test_sampler_bounds_per_shape_size_and_model() -> None:
    sampler = PayloadSampler(["m"], per_shape=2, max_sample_bytes=100, max_model_bytes=250)
    assert not sampler.wants(obs("other"), 10)  # not opted in
    assert not sampler.wants(obs(), 101)  # one sample too large
    assert [sampler.wants(obs(), 50) for _ in range(3)] == [True, True, False]
    assert sampler.wants(obs(inputs=X2), 100)
    assert not sampler.wants(obs(inputs=(InputHeader("x", "FP32", (3, 4)),)), 100)  # model cap
    sampler.load({("m", "x:FP32:1x4"): (1, 10)})  # counts restored from the database
    assert sampler.wants(obs(), 50) and not sampler.wants(obs(), 50)


async def test_a_failing_listener_does_not_fail_the_flush(database: Database) -> None:
    recorder = TrafficRecorder(TrafficStore(database, "default"))
    seen: list[int] = []

    def broken(batch: list[Observation]) -> None:
        raise RuntimeError("listener down")

    recorder.listeners += [broken, lambda batch: seen.append(len(batch))]
    recorder.record(obs())
    assert await recorder.flush() == 1
    assert seen == [1]  # later listeners still hear of it
    assert sum(u.requests for u in recorder.store.usage("m", 0, 2e9)) == 1
