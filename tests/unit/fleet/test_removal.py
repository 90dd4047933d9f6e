"""A replica leaving (trim, make room): out of routing first, unloaded once nothing is in
flight on it; a model's last replica goes at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from controlplane.fleet.removal import remove_replica
from controlplane.lifecycle.states import ModelState
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet, runtime


async def test_a_leaving_replica_is_not_picked_and_waits_for_its_in_flight_requests(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    for rt in (a, b):
        await fleet.load("hot", trigger="replica", instance=rt.name)
    assert b.upstream is not None
    b.upstream.begin("hot")  # a request in flight on b
    b.upstream.begin("warm")  # another model's: not waited for
    removal = asyncio.create_task(remove_replica(fleet, b, "hot", trigger="replica"))
    await asyncio.sleep(0.1)
    assert not removal.done() and runtime(b)[0].unloads == []  # Triton not asked yet
    assert "hot" in b.leaving
    assert [fleet.router.pick("hot") for _ in range(20)] == [a] * 20  # never b now
    assert fleet.ready_now("hot", exclude=("a",)) is False
    b.upstream.end("hot")
    status = await asyncio.wait_for(removal, 1.0)
    assert status.state is ModelState.COLD and runtime(b)[0].unloads == ["hot"]
    assert "hot" not in b.leaving


async def test_an_open_sequence_holds_the_removal_until_it_ends(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a, b = fleet.order
    for rt in (a, b):
        await fleet.load("hot", trigger="replica", instance=rt.name)
    fleet.sequences.opened("hot", "42", "b")
    removal = asyncio.create_task(remove_replica(fleet, b, "hot", trigger="replica"))
    await asyncio.sleep(0.1)
    assert not removal.done()
    fleet.sequences.ended("hot", "42")
    await asyncio.wait_for(removal, 1.0)
    assert runtime(b)[0].unloads == ["hot"]


async def test_the_last_replica_is_unloaded_at_once(tmp_path: Path,
                                                    database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"), drain_timeout_s=5)
    a, _ = fleet.order
    await fleet.load("hot", trigger="replica", instance="a")
    assert a.upstream is not None
    a.upstream.begin("hot")  # nowhere else to send it: Triton finishes it while unloading
    await asyncio.wait_for(remove_replica(fleet, a, "hot", trigger="make room"), 1.0)
    assert runtime(a)[0].unloads == ["hot"] and not a.leaving
