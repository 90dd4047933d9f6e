"""The fleet over real managers on fake Tritons: one load per cold model, where it goes,
the model's status across replicas, unloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.errors import InstanceNotFound, ModelNotFound, TritonUnavailable
from controlplane.fleet.states import InstanceState
from controlplane.lifecycle.states import ModelState
from controlplane.policy.replicas import Replica, ReplicaPlan
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet, runtime
from tests.unit.lifecycle.fake_port import after, succeed


def _ready(fleet_replicas: list[object]) -> list[str]:
    return sorted(s.instance for s in fleet_replicas  # type: ignore[attr-defined]
                  if s.state is ModelState.READY)  # type: ignore[attr-defined]


async def test_concurrent_first_requests_share_one_load_on_one_instance(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b", "c"))
    gate = asyncio.Event()
    for rt in fleet.order:
        runtime(rt)[0].load_script["hot"].append(after(gate, succeed()))
    waiters = [asyncio.create_task(fleet.ensure_ready("hot")) for _ in range(20)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(*waiters)
    loads = {rt.name: len(runtime(rt)[0].loads) for rt in fleet.order}
    assert sum(loads.values()) == 1, loads
    assert _ready(fleet.replicas("hot")) == [name for name, n in loads.items() if n]
    assert fleet.ready_now("hot") and fleet.state("hot") is ModelState.READY


async def test_a_cold_load_goes_where_the_plan_says_else_to_the_most_free_instance(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"), budget_mb=1000)
    await fleet.load("warm", trigger="api", instance="a")
    assert fleet.choose("rare").name == "b"  # a holds 100 MB already
    fleet.plan = ReplicaPlan({"rare": (Replica("a", "planned"),)}, {})
    assert fleet.choose("rare").name == "a"
    with pytest.raises(ModelNotFound):
        fleet.choose("nope")


async def test_no_load_goes_to_a_draining_or_dead_instance(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    a.move(InstanceState.DRAINING, "test")
    await fleet.ensure_ready("hot")
    assert _ready(fleet.replicas("hot")) == ["b"]
    runtime(b)[1].serving = False
    assert not fleet.ready_now("hot")  # ready on b, but b cannot serve
    with pytest.raises(TritonUnavailable) as none:
        await fleet.ensure_ready("hot")
    assert "a: draining" in str(none.value) and "b: tritonserver was killed" in str(none.value)
    assert fleet.down_reason() is not None and not fleet.serving


async def test_status_is_the_best_replicas_and_unload_takes_every_replica(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    await fleet.load("hot", trigger="replica", instance="a")
    await fleet.load("hot", trigger="replica", instance="b")
    assert fleet.status("hot").state is ModelState.READY
    assert [s.instance for s in fleet.replicas("hot")] == ["a", "b"]
    await fleet.unload("hot", trigger="scheduler")
    assert fleet.state("hot") is ModelState.COLD
    assert [len(runtime(rt)[0].unloads) for rt in fleet.order] == [1, 1]


async def test_a_replica_the_operator_loaded_stays_until_the_operator_releases_it(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    await fleet.load("hot", trigger="replica", instance="a")
    kept = await fleet.load("hot", trigger="api", instance="b")
    assert kept.kept and [s.kept for s in fleet.replicas("hot")] == [False, True]
    await fleet.unload("hot", trigger="scheduler")  # an eviction: b's replica stays
    assert [s.state for s in fleet.replicas("hot")] == [ModelState.COLD, ModelState.READY]
    b = fleet.order[1]
    assert b.manager is not None
    b.manager.release("hot")
    await fleet.unload("hot", trigger="scheduler")
    assert fleet.state("hot") is ModelState.COLD
    await fleet.load("hot", trigger="api", instance="a")
    await fleet.unload("hot", trigger="api")  # the operator's own unload takes it too
    assert fleet.state("hot") is ModelState.COLD and not fleet.status("hot").kept


async def test_an_operator_load_may_target_one_instance(tmp_path: Path,
                                                        database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    await fleet.load("rare", trigger="api", instance="b")
    assert _ready(fleet.replicas("rare")) == ["b"]
    with pytest.raises(InstanceNotFound) as unknown:
        await fleet.load("rare", trigger="api", instance="zz")
    assert "unknown instance 'zz'" in str(unknown.value)
