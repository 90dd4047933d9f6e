"""The fleet as the serving core's port: admission through the path, sequence routing, the
retry rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.errors import DeadlineExceeded, ModelNotFound
from controlplane.fleet.replicas import FleetReplicas
from controlplane.fleet.states import InstanceState
from controlplane.serving.facts import Sequence
from controlplane.serving.path import InferencePath
from controlplane.serving.status import Status
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet, runtime
from tests.unit.lifecycle.fake_port import after, succeed


async def test_admit_a_ready_replica_at_once_and_a_cold_model_after_its_one_load(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    path = InferencePath(FleetReplicas(fleet))
    await fleet.load("hot", trigger="replica", instance="b")
    rt, cold = await path.admit("hot", 1.0)
    assert (rt.name, cold) == ("b", False)
    rt, cold = await path.admit("warm", 1.0)
    assert cold and rt.manager is not None and rt.manager.ready_now("warm")
    with pytest.raises(ModelNotFound):
        await path.admit("nope", 1.0)


async def test_a_load_past_the_deadline_is_deadline_exceeded_and_goes_on(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a",))
    gate = asyncio.Event()
    runtime(fleet.order[0])[0].load_script["hot"].append(after(gate, succeed()))
    path = InferencePath(FleetReplicas(fleet))
    with pytest.raises(DeadlineExceeded, match="its load goes on"):
        await path.admit("hot", 0.1)
    gate.set()
    rt, _cold = await path.admit("hot", 1.0)
    assert rt.name == "a"


async def test_steps_of_an_open_sequence_follow_their_start_even_to_a_draining_instance(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    fleet.traits._stateful["hot"] = True  # the identity model, taken as stateful
    for rt in (a, b):
        await fleet.load("hot", trigger="replica", instance=rt.name)
    path = InferencePath(FleetReplicas(fleet))
    first, _ = await path.admit("hot", 1.0, sequence=Sequence("7", True, False))
    assert first is a  # sticky: the first ready replica takes new sequences
    a.cordoned = True
    a.move(InstanceState.DRAINING, "test")
    step, _ = await path.admit("hot", 1.0, sequence=Sequence("7", False, False))
    assert step is a  # its state is on a
    new, _ = await path.admit("hot", 1.0, sequence=Sequence("8", True, False))
    assert new is b  # new sequences start elsewhere at once
    last, _ = await path.admit("hot", 1.0, sequence=Sequence("7", False, True))
    assert last is a and fleet.sequences.open_on("a") == 0
    assert fleet.sequences.open_on("b") == 1


async def test_which_failures_go_to_another_replica(tmp_path: Path,
                                                   database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, _ = fleet.order
    await fleet.load("hot", trigger="replica", instance="a")
    retry = FleetReplicas(fleet).retry_on
    assert retry(a, "hot", Status.UNAVAILABLE, None)
    assert not retry(a, "hot", Status.NOT_FOUND, None)  # lost behind our back: checked
    assert not retry(a, "hot", Status.INVALID_ARGUMENT, None)
    a.leaving.add("hot")  # warmctl is removing it
    assert retry(a, "hot", Status.NOT_FOUND, None)
    assert retry(a, "hot", Status.NOT_FOUND, Sequence("1", True, False))
    # a step inside an open sequence stays: its state is where it was
    assert not retry(a, "hot", Status.UNAVAILABLE, Sequence("1", False, False))
