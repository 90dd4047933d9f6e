"""The status view over a fleet of two instances (real managers, fake Tritons): a model's
replicas are the instances it is ready on, against the replica plan's number."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from controlplane.observability.status import build_status
from controlplane.policy.replicas import Replica, ReplicaPlan
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet, runtime


async def test_replicas_are_ready_instances_against_the_plan(tmp_path: Path,
                                                             database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    for rt in fleet.order:
        sup: Any = runtime(rt)[1]
        sup.snapshot = lambda: {"state": "live"}
    await fleet.load("hot", trigger="api", instance="a")
    await fleet.load("hot", trigger="api", instance="b")
    await fleet.load("warm", trigger="api", instance="b")
    cp: Any = SimpleNamespace(fleet=fleet, scheduler=None, repository=fleet.repository,
                              database=database)

    def figures(view: Any) -> dict[str, tuple[int, int | None, int | None]]:
        return {m.name: (m.replicas, m.planned_replicas, m.instances_per_replica)
                for m in view.models}

    # no plan yet: nothing planned to compare with; instance_group's count is 1 in each
    before = await build_status(cp, minutes=1, history=False)
    assert figures(before) == {"hot": (2, None, 1), "warm": (1, None, 1), "rare": (0, None, 1)}

    fleet.plan = ReplicaPlan({"hot": (Replica("a", "hot"), Replica("b", "hot")),
                              "warm": (Replica("a", "warm"), Replica("b", "warm")),
                              "rare": ()}, {})
    planned = await build_status(cp, minutes=1, history=False)
    assert figures(planned) == {"hot": (2, 2, 1), "warm": (1, 2, 1), "rare": (0, 0, 1)}
