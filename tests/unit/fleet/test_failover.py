"""Failover (models of a dead instance loaded elsewhere, hottest first) and draining."""

from __future__ import annotations

import asyncio
from pathlib import Path

from controlplane.errors import TritonUnavailable
from controlplane.fleet.drain import drain, resume
from controlplane.fleet.failover import Failover
from controlplane.fleet.states import InstanceState
from controlplane.lifecycle.states import ModelState
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet, runtime
from tests.unit.lifecycle.fake_port import after, succeed


def _ready_on(fleet: object, model: str) -> list[str]:
    return sorted(s.instance for s in fleet.replicas(model)  # type: ignore[attr-defined]
                  if s.state is ModelState.READY)


async def test_models_only_the_dead_instance_had_are_loaded_elsewhere_hottest_first(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    for model in ("hot", "warm", "rare"):
        await fleet.load(model, trigger="api", instance="a")
    await fleet.load("warm", trigger="api", instance="b")
    fleet.rates = {"hot": 9.0, "rare": 0.1, "warm": 5.0}
    runtime(a)[1].serving = False
    assert a.manager is not None
    await a.manager.triton_down("tritonserver was killed by signal 9")
    failover = Failover(fleet, a, concurrency=1)  # one at a time: the order is observable
    await failover.triton_down("tritonserver was killed by signal 9")
    assert failover.task is not None
    moved = await failover.task
    assert moved == {"hot": "b", "rare": "b"}  # warm still had its replica on b
    assert [model for model, _ in runtime(b)[0].loads] == ["warm", "hot", "rare"]
    assert all(a_.kind == "failover" and a_.outcome == "ok" for a_ in fleet.actions)


async def test_a_drain_moves_needed_models_waits_for_in_flight_then_unloads(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    for model in ("hot", "rare"):
        await fleet.load(model, trigger="api", instance="b")
    await fleet.load("hot", trigger="api", instance="a")
    assert b.upstream is not None
    b.upstream.outstanding = 2

    async def finish_in_flight() -> None:
        await asyncio.sleep(0.2)
        b.upstream.outstanding = 0  # type: ignore[union-attr]

    finishing = asyncio.create_task(finish_in_flight())
    report = await drain(fleet, "b")
    await finishing
    assert report.moved == {"hot": "already ready elsewhere", "rare": "a"}
    assert report.waited_s >= 0.15 and report.in_flight_left == 0
    assert sorted(report.unloaded) == ["hot", "rare"]
    assert _ready_on(fleet, "rare") == ["a"] and _ready_on(fleet, "hot") == ["a"]
    assert not b.routable and fleet.choose("warm") is a
    resume(fleet, "b")
    assert b.routable


async def test_a_drain_keeps_serving_until_what_it_holds_is_ready_elsewhere(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    await fleet.load("rare", trigger="replica", instance="b")
    await fleet.load("warm", trigger="replica", instance="b")
    gate = asyncio.Event()
    runtime(a)[0].load_script["rare"].append(after(gate, succeed()))
    fleet.sequences.opened("rare", "9", "b")  # an open sequence on b
    draining = asyncio.create_task(drain(fleet, "b"))
    await asyncio.sleep(0.1)
    # rare is loading on a: b still serves it, but takes no new loads
    assert b.cordoned and b.routable and fleet.router.pick("rare") is b
    assert fleet.choose("hot") is a
    gate.set()
    report = await asyncio.wait_for(draining, 2.0)
    # ready on a: b takes no new requests; its open sequence keeps rare there for a while
    assert not b.routable and fleet.router.pick("rare") is a
    assert report.moved == {"rare": "a", "warm": "a"} and report.sequences_left == 1
    assert report.unloaded == ["warm"] and list(report.lingering) == ["rare"]
    assert runtime(b)[0].unloads == ["warm"]
    fleet.sequences.ended("rare", "9")  # the sequence is over: b's replica goes
    await asyncio.sleep(0.2)
    assert runtime(b)[0].unloads == ["warm", "rare"]
    assert [(x.kind, x.model, x.instance, x.outcome) for x in fleet.actions
            if x.model == "rare"] == [("drain load", "rare", "a", "ok"),
                                      ("drain", "rare", "b", "unloaded")]
    await fleet.close()


async def test_a_cold_load_moves_elsewhere_when_its_instance_dies_and_waiters_keep_waiting(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    gate = asyncio.Event()
    fake_a, sup_a = runtime(a)

    async def dies(fake: object, model: str) -> None:
        sup_a.serving = False
        raise TritonUnavailable("Triton at fake is unreachable: connection reset")

    fake_a.load_script["hot"].append(after(gate, dies))
    waiters = [asyncio.create_task(fleet.ensure_ready("hot")) for _ in range(5)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 2.0)
    assert fleet.router.pick("hot") is b
    assert [len(runtime(rt)[0].loads) for rt in (a, b)] == [1, 1]


async def test_a_cold_load_moves_elsewhere_when_a_drain_starts_meanwhile(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    gate = asyncio.Event()
    runtime(a)[0].load_script["hot"].append(after(gate, succeed()))
    waiter = asyncio.create_task(fleet.ensure_ready("hot"))
    await asyncio.sleep(0.05)
    a.cordoned = True
    a.move(InstanceState.DRAINING, "test")  # drained while the load ran
    gate.set()
    await asyncio.wait_for(waiter, 2.0)
    assert fleet.router.pick("hot") is b
