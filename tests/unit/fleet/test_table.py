"""The fleet as a routing table for gateway workers, and the removal's wait for what the
workers have in flight (their reported counts, after they route by a table without it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from controlplane.fleet.removal import remove_replica
from controlplane.fleet.states import InstanceState
from controlplane.fleet.table import routing_table
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet, runtime


async def _fleet(tmp_path: Path, database: Database) -> Any:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    for i, rt in enumerate(fleet.order):
        rt.instance = cast(Any, SimpleNamespace(grpc_url=f"127.0.0.1:{9000 + i}",
                                                http_url=f"http://127.0.0.1:{8000 + i}"))
    return fleet


async def test_the_table_lists_what_the_router_may_pick(tmp_path: Path,
                                                         database: Database) -> None:
    fleet = await _fleet(tmp_path, database)
    a, b = fleet.order
    for rt in (a, b):
        await fleet.load("hot", trigger="replica", instance=rt.name)
    await fleet.load("warm", trigger="replica", instance="a")
    b.weights["hot"] = 0.25
    table = routing_table(fleet, 7)
    assert table.version == 7 and table.down is None
    assert [(e.name, e.url, e.http_url, e.routable) for e in table.instances] == [
        ("a", "127.0.0.1:9000", "http://127.0.0.1:8000", True),
        ("b", "127.0.0.1:9001", "http://127.0.0.1:8001", True)]
    assert table.serving == {"hot": {"a": 1.0, "b": 0.25}, "warm": {"a": 1.0}}

    # leaving, weight 0, draining: not picked; a draining Triton still holds sequences
    a.leaving.add("warm")
    b.weights["hot"] = 0.0
    b.move(InstanceState.DRAINING, "test")
    table = routing_table(fleet, 8)
    assert table.serving == {"hot": {"a": 1.0}}
    assert table.ready_live["hot"] == frozenset({"a", "b"})
    assert not table.same_routes(type(table)(5))
    assert table.same_routes(routing_table(fleet, 9))

    # nothing serves: the reason travels with the table
    runtime(a)[1].serving = False
    table = routing_table(fleet, 10)
    assert table.serving == {} and table.down is not None and "killed" in table.down


async def test_a_removal_waits_for_the_workers_in_flight_requests(
        tmp_path: Path, database: Database) -> None:
    fleet = await _fleet(tmp_path, database)
    a, b = fleet.order
    for rt in (a, b):
        await fleet.load("hot", trigger="replica", instance=rt.name)
    published: list[bool] = []

    async def publish() -> None:
        published.append("hot" in b.leaving)  # the replica was out of the table first

    fleet.publish = publish
    assert b.upstream is not None
    b.upstream.remote_by_model = {"hot": 2}  # as the workers reported
    b.upstream.remote_outstanding = 2
    removal = asyncio.create_task(remove_replica(fleet, b, "hot", trigger="replica"))
    await asyncio.sleep(0.1)
    assert published == [True] and not removal.done() and runtime(b)[0].unloads == []
    b.upstream.remote_by_model, b.upstream.remote_outstanding = {}, 0
    await asyncio.wait_for(removal, 1.0)
    assert runtime(b)[0].unloads == ["hot"]


async def test_a_workers_open_sequence_holds_the_removal(tmp_path: Path,
                                                         database: Database) -> None:
    fleet = await _fleet(tmp_path, database)
    a, b = fleet.order
    for rt in (a, b):
        await fleet.load("hot", trigger="replica", instance=rt.name)
    fleet.sequences.elsewhere = {("b", "hot"): 1}
    assert fleet.sequences.open_on("b", "hot") == 1 and fleet.sequences.open_on("a") == 0
    removal = asyncio.create_task(remove_replica(fleet, b, "hot", trigger="replica"))
    await asyncio.sleep(0.1)
    assert not removal.done()
    fleet.sequences.elsewhere = {}
    await asyncio.wait_for(removal, 1.0)
    assert runtime(b)[0].unloads == ["hot"]
