"""The lifecycle while its store fails: loads and unloads go on, their records follow; a
restore that fails for a reason not the model's is retried until the model is ready."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from controlplane.errors import StoreUnavailable
from controlplane.lifecycle import restore_retry
from controlplane.lifecycle.manager import ModelManager
from controlplane.lifecycle.states import LoadPlan, ModelState
from controlplane.store.database import Database
from controlplane.store.lifecycle import LifecycleStore
from controlplane.triton.repository import ModelRepository, ModelSpec
from tests.support.repository import add_identity
from tests.support.store_faults import StoreFaults
from tests.support.waiting import until
from tests.unit.lifecycle.fake_port import FakeTriton, refuse


class FlakyPreparer:
    """Fails ``failures`` preparations (a store that cannot answer, or a bug of ours)."""

    def __init__(self, error: BaseException, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return LoadPlan()


async def _manager(tmp_path: Path, database: Database, **options: object
                   ) -> tuple[ModelManager, FakeTriton]:
    repo = tmp_path / "repo"
    for name in ("m", "pin"):
        add_identity(repo, name)
    fake = FakeTriton()
    manager = ModelManager(instance=fake, repository=ModelRepository(repo),
                           store=LifecycleStore(database, "default"), pinned=["pin"],
                           **options)  # type: ignore[arg-type]
    manager.strict_transitions = True
    await manager.start()
    return manager, fake


@pytest.mark.parametrize("fault", ["full", "readonly"])
async def test_loads_and_unloads_go_on_while_the_store_refuses_writes_and_records_follow(
        tmp_path: Path, database: Database, fault: str) -> None:
    manager, _ = await _manager(tmp_path, database)
    faults = StoreFaults(database)
    faults.set(fault)  # type: ignore[arg-type]
    t0 = time.monotonic()
    assert (await manager.load("m")).state is ModelState.READY
    assert (await manager.unload("m", trigger="scheduler")).state is ModelState.COLD
    await manager.load("m", trigger="gateway")
    assert time.monotonic() - t0 < 2 * database.writes.settle_s + 1
    assert manager.ready_now("m") and faults.hits > 0
    assert manager.store.model("m").state == "cold"  # nothing written yet
    assert manager.store.events("m") == []
    faults.clear()
    assert await database.writes.drain(10)
    events = manager.store.events("m")
    assert [(e.action, e.trigger, e.outcome) for e in reversed(events)] == [
        ("load", "api", "ok"), ("unload", "scheduler", "ok"), ("load", "gateway", "ok")]
    row = manager.store.model("m")
    assert row.state == "ready" and row.memory_bytes == 1000  # the newest state, merged
    assert not database.writes.dropped


async def test_a_stalled_store_holds_a_load_for_one_settle_at_most(
        tmp_path: Path, database: Database) -> None:
    manager, _ = await _manager(tmp_path, database)
    database.writes.settle_s = 0.3
    faults = StoreFaults(database)
    faults.set("stall")
    t0 = time.monotonic()
    await manager.load("m")
    await manager.unload("m")
    assert time.monotonic() - t0 < 1.0  # not five state and record writes of 0.3 s each
    assert manager.status("m").state is ModelState.COLD
    faults.clear()
    assert await database.writes.drain(10)
    assert [e.action for e in manager.store.events("m")] == ["unload", "load"]


async def test_a_model_added_while_the_store_is_full_gets_its_row_later(
        tmp_path: Path, database: Database) -> None:
    manager, _ = await _manager(tmp_path, database)
    faults = StoreFaults(database)
    faults.set("full")
    add_identity(tmp_path / "repo", "new")
    assert "new" in {s.name for s in manager.statuses()}  # no SQL on this path
    await manager.load("new")
    faults.clear()
    assert await database.writes.drain(10)
    assert manager.store.model("new").state == "ready"
    assert [e.outcome for e in manager.store.events("new")] == ["ok"]


@pytest.mark.parametrize("error", [StoreUnavailable("the store failed: disk I/O error"),
                                   RuntimeError("a bug of ours")])
async def test_a_restore_failing_for_a_reason_not_the_models_is_retried_until_ready(
        tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch,
        error: BaseException) -> None:
    monkeypatch.setattr(restore_retry, "RETRY_FIRST_S", 0.05)
    preparer = FlakyPreparer(error, failures=0)
    manager, fake = await _manager(tmp_path, database, preparer=preparer)
    await manager.load("pin")
    fake.down, fake.entries = True, {}
    await manager.triton_down("tritonserver (pid 1) was killed by signal 9 (SIGKILL)")
    fake.down = False
    preparer.failures, preparer.calls = 3, 0  # the restore and two retries fail
    reports: list[str | None] = []
    manager.restore_retry.on_pass = reports.append  # the loops registry, in the app
    results = await manager.triton_up()
    assert results["pin"].startswith("retrying: ")
    assert manager.status("pin").state is ModelState.FAILED
    # until the retry's pass has ended (ready comes a moment before its record, more so
    # on PostgreSQL's slower store)
    assert await until(lambda: manager.ready_now("pin") and len(reports) == 4, 5)
    assert preparer.calls == 4 and manager.recovery.last_restore["pin"] == "ok"
    assert manager.recovery.retrying == {}
    assert manager.restore_retry.passes == 3
    assert len(reports) == 4 and reports[-1] is None
    assert all(r is not None and r.startswith("pin: retrying: ") for r in reports[:3])


async def test_a_restore_failing_for_the_models_own_reason_is_not_retried(
        tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restore_retry, "RETRY_FIRST_S", 0.05)
    manager, fake = await _manager(tmp_path, database)
    await manager.load("pin")
    fake.down, fake.entries = True, {}
    await manager.triton_down("tritonserver exited with code 1")
    fake.down = False
    fake.load_script["pin"] = [refuse("model.py: SyntaxError")]
    results = await manager.triton_up()
    assert results["pin"].startswith("failed: ") and "SyntaxError" in results["pin"]
    assert not await until(lambda: len(fake.loads) > 2, 0.5)  # the first load and the restore
    assert manager.recovery.retrying == {} and manager.restore_retry.passes == 0
    assert manager.status("pin").state is ModelState.FAILED
