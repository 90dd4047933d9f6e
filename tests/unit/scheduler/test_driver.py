"""The live scheduler against a scripted :class:`ModelControl` (the narrow interface it drives:
one instance's manager or the fleet), with a real repository and real SQLite traffic."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.config import SchedulerOptions
from controlplane.errors import ModelNotFound
from controlplane.lifecycle.states import ModelState, ModelStatus
from controlplane.policy.harness import NEVER_REQUESTED
from controlplane.policy.types import ModelDecision
from controlplane.scheduler.control import BeforeLoad, ModelControl
from controlplane.scheduler.driver import LiveScheduler
from controlplane.store.database import Database
from controlplane.traffic.observation import Observation
from controlplane.traffic.store import TrafficStore
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName
from tests.support.repository import add_identity

MIB = 2**20


class ScriptedControl:
    """Models in fixed states; records the loads and unloads asked for."""

    def __init__(self, repository: ModelRepository, states: dict[str, ModelState]) -> None:
        self.repository = repository
        self.pinned: list[ModelName] = []
        self.before_load: list[BeforeLoad] = []
        self.states = states
        self.calls: list[tuple[str, str, str]] = []

    def status(self, name: ModelName) -> ModelStatus:
        if name not in self.states:
            raise ModelNotFound(name)
        return ModelStatus(name, "default", self.states[name], None,
                           datetime.fromtimestamp(0.0, UTC),
                           False, 100 * MIB, 1.0, False)

    def statuses(self) -> list[ModelStatus]:
        return [self.status(name) for name in sorted(self.states)]

    async def load(self, name: ModelName, *, trigger: str) -> object:
        self.calls.append(("load", name, trigger))
        return None

    async def unload(self, name: ModelName, *, trigger: str) -> object:
        self.calls.append(("unload", name, trigger))
        self.states[name] = ModelState.COLD
        return None


@pytest.fixture
async def traffic(tmp_path: Path) -> AsyncIterator[TrafficStore]:
    db = Database(f"sqlite:///{tmp_path / 'warmctl.db'}")
    db.migrate()
    yield TrafficStore(db, "default")
    db.close()


def repository(tmp_path: Path, *names: str) -> ModelRepository:
    repo = tmp_path / "models"
    for name in names:
        add_identity(repo, name)
    return ModelRepository(repo)


async def test_tick_hands_its_decisions_to_every_hook(tmp_path: Path,
                                                      traffic: TrafficStore) -> None:
    now = time.time()
    traffic.write([Observation("used", "", (), now - k * 60.0, 0.001, "OK", False, None)
                   for k in range(30, 0, -1)])
    control = ScriptedControl(repository(tmp_path, "used", "never"),
                              {"used": ModelState.COLD, "never": ModelState.COLD})
    manager: ModelControl = control  # the fake satisfies the scheduler's interface
    scheduler = LiveScheduler(manager=manager, traffic=traffic,
                              options=SchedulerOptions(memory_budget_mb=10_000.0))
    seen: list[list[ModelDecision]] = []

    async def hook(decisions: list[ModelDecision]) -> None:
        seen.append(decisions)

    scheduler.on_decisions.append(hook)
    await scheduler.start()
    try:
        scheduler.pins_settled = True
        await scheduler.tick()
        await scheduler.tick()
        assert len(seen) == 2
        by_model = {d.model: d for d in seen[-1]}
        assert set(by_model) == {"used", "never"}
        assert by_model["used"].requests_per_day > 0
        # the hooks see the decisions as applied: never requested is never preloaded
        assert (by_model["never"].decision, by_model["never"].why) == ("lazy", NEVER_REQUESTED)
        assert ("load", "never", "scheduler") not in control.calls
        again = await scheduler.explain_decisions()
        assert [(d.model, d.decision) for d in seen[-1]] == [(d.model, d.decision)
                                                            for d in again]
    finally:
        await scheduler.close()
