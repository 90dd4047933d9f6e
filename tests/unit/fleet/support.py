"""Fleets of real ModelManagers on scripted fake Tritons (``tests/unit/lifecycle/fake_port``).

Only the Triton side is fake (and the supervisor, reduced to its ``serving`` flag): the
fleet, its router, placement, failover and drain run as in production, in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from controlplane.config import FleetSettings, InstanceSettings
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.states import InstanceState
from controlplane.lifecycle.manager import ModelManager
from controlplane.serving.upstream import Upstream
from controlplane.store.database import Database
from controlplane.store.lifecycle import LifecycleStore
from controlplane.triton.repository import ModelRepository
from controlplane.triton.watched import TritonState
from tests.support.repository import add_identity
from tests.unit.lifecycle.fake_port import FakeTriton

MODELS = ("hot", "warm", "rare")


class FakeSupervisor:
    """What the fleet reads of a supervisor: whether its Triton serves."""

    def __init__(self) -> None:
        self.serving = True
        self.state = TritonState.LIVE

    def down_reason(self) -> str | None:
        return None if self.serving else "tritonserver was killed by signal 9"


def runtime(rt: InstanceRuntime) -> tuple[FakeTriton, FakeSupervisor]:
    """The fake Triton and supervisor behind ``rt``."""
    assert rt.manager is not None and rt.supervisor is not None
    return cast(FakeTriton, rt.manager.instance), cast(FakeSupervisor, rt.supervisor)


async def make_fleet(tmp_path: Path, database: Database, names: tuple[str, ...] = ("a", "b"),
                     *, budget_mb: float | None = None, pinned: tuple[str, ...] = (),
                     **fleet_options: Any) -> Fleet:
    repo = tmp_path / "repo"
    for model in MODELS:
        add_identity(repo, model)
    repository = ModelRepository(repo)
    runtimes = []
    for name in names:
        rt = InstanceRuntime(name, InstanceSettings(memory_budget_mb=budget_mb),
                             provider=cast(Any, None), shared=cast(Any, None))
        fake = FakeTriton()
        fake.name = name
        rt.manager = ModelManager(instance=fake, repository=repository,
                                  store=LifecycleStore(database, name), pinned=list(pinned))
        rt.manager.strict_transitions = True
        await rt.manager.start()
        rt.supervisor = cast(Any, FakeSupervisor())
        rt.upstream = Upstream(name, "127.0.0.1:1")  # never opened: no call goes out
        rt.move(InstanceState.SERVING, "test fleet")
        runtimes.append(rt)
    fleet = Fleet(runtimes, repository, FleetSettings(**fleet_options), pinned=list(pinned))
    fleet.memory_mb = lambda model: 100.0
    for rt in runtimes:
        assert rt.manager is not None
        rt.manager.before_load.append(fleet.run_before_load)
    return fleet
