"""The policy's budget follows the fleet: serving (and draining) instances count, a standby
or a warming one does not; each change hands the new sum over."""

from __future__ import annotations

from pathlib import Path

from controlplane.config import SchedulerOptions
from controlplane.fleet.budgets import FleetBudgets
from controlplane.fleet.states import InstanceState
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet


async def test_budgets_sum_what_serves_and_follow_changes(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b", "c"), budget_mb=1000)
    fleet.runtimes["c"].phase = InstanceState.STANDBY
    given: list[SchedulerOptions] = []
    budgets = FleetBudgets(fleet, SchedulerOptions(), apply=given.append)
    budgets.gpu_mb = {"a": 100.0, "b": 200.0, "c": 400.0}
    assert budgets.host_mb() == 2000 and budgets.gpu_total_mb() == 300
    fleet.runtimes["c"].move(InstanceState.SERVING, "promoted")
    budgets.refresh()
    assert given[-1].memory_budget_mb == 3000 and given[-1].gpu_memory_budget_mb == 700
    budgets.detached(fleet.runtimes["b"])
    assert "b" not in budgets.gpu_mb
    fleet.runtimes["a"].spec = fleet.runtimes["a"].spec.model_copy(
        update={"memory_budget_mb": None})
    assert budgets.host_mb() is None  # one unlimited instance: unlimited
