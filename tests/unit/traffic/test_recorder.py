from __future__ import annotations

import asyncio
from collections.abc import Sequence

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


async def test_a_refused_write_is_kept_and_written_in_order_once_the_store_takes_it(
        database: Database) -> None:
    store = FailingStore(database)
    recorder = TrafficRecorder(store)
    recorder.record(obs(at=1e9))
    recorder.record(obs(at=1e9 + 1))
    assert await recorder.flush() == 2  # handed over at once, whatever the disk says
    recorder.record(obs(at=1e9 + 2))
    assert await recorder.flush() == 1
    assert recorder.held == 3 and recorder.written == 0 and recorder.dropped == 0
    store.fail = False
    assert await database.writes.drain(10)
    assert recorder.held == 0 and recorder.written == 3 and recorder.dropped == 0
    assert [r.arrived_at for r in reversed(store.requests("m"))] == [1e9, 1e9 + 1, 1e9 + 2]


async def test_records_held_while_the_store_refuses_writes_count_against_the_bound(
        database: Database) -> None:
    store = FailingStore(database)
    recorder = TrafficRecorder(store, max_buffer=5)
    for _ in range(4):
        recorder.record(obs())
    await recorder.flush()  # queued, not written: still held
    for _ in range(3):
        recorder.record(obs())
    assert recorder.held == 5 and recorder.dropped_by == {"full": 2}
    left = await database.writes.close(0.05)  # a clean stop that runs out of time
    assert left == {("traffic", "stopped"): 4}
    await asyncio.sleep(0)  # the write's done-callback runs
    assert recorder.dropped_by == {"full": 2, "stopped": 4}
    assert recorder.held == 1  # still buffered: a final flush would hand it over


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


async def test_observation_hooks_see_each_known_request_as_recorded(database: Database) -> None:
    declared = {"m": frozenset({"x"})}
    recorder = TrafficRecorder(TrafficStore(database, "default"), max_buffer=2,
                               declared=declared.get)
    seen: list[Observation] = []

    def broken(observation: Observation) -> None:
        raise RuntimeError("hook down")

    recorder.on_observation += [broken, seen.append]
    odd = (InputHeader("x", "FP32", (1, 4)), InputHeader("undeclared", "FP32", (1,)))
    recorder.record(obs()._replace(instance="a"))
    recorder.record(obs(inputs=odd)._replace(instance="b"))
    recorder.record(obs()._replace(instance="c"))  # the buffer is full: dropped, still seen
    recorder.record(obs("unknown")._replace(instance="a"))  # not a model of ours: not seen
    assert [(o.model, o.instance) for o in seen] == [("m", "a"), ("m", "b"), ("m", "c")]
    assert seen[1].inputs == X1  # as admitted: what the store gets
    assert recorder.dropped_by["full"] == 1 and recorder.unknown_models == 1
    assert await recorder.flush() == 2  # a broken hook costs no record
