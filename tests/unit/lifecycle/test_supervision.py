"""The manager's Triton-supervision section against a scripted fake Triton port (no server;
see ``fake_port.py``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from controlplane.lifecycle.manager import ModelManager
from controlplane.lifecycle.states import ModelState
from controlplane.store.database import Database
from controlplane.store.lifecycle import LifecycleStore
from controlplane.triton.repository import ModelRepository
from tests.support.repository import add_identity
from tests.unit.lifecycle.fake_port import FakeTriton


async def _manager(tmp_path: Path, database: Database) -> tuple[ModelManager, FakeTriton]:
    repo = tmp_path / "repo"
    for name in ("core", "low", "other", "idle"):
        add_identity(repo, name)
    fake = FakeTriton()
    manager = ModelManager(instance=fake, repository=ModelRepository(repo),
                           store=LifecycleStore(database, "default"), pinned=["core", "low"])
    manager.strict_transitions = True
    await manager.start()
    for name in ("low", "core", "other"):
        await manager.load(name, trigger="api")
    fake.loads.clear()
    return manager, fake


async def test_down_marks_every_served_model_cold_and_up_restores_pinned_first(
    tmp_path: Path, database: Database
) -> None:
    manager, fake = await _manager(tmp_path, database)
    fake.down, fake.entries = True, {}
    await manager.triton_down("tritonserver (pid 1) was killed by signal 9 (SIGKILL)")
    for name in ("core", "low", "other"):
        status = manager.status(name)
        assert status.state is ModelState.COLD and "SIGKILL" in (status.reason or "")
    assert manager.status("idle").state is ModelState.COLD
    assert manager.triton_down_reason is not None
    fake.down = False
    results = await manager.triton_up()
    assert [name for name, _ in fake.loads] == ["core", "low", "other"]  # pins by priority
    assert results == {"core": "ok", "low": "ok", "other": "ok"}
    assert all(manager.ready_now(n) for n in ("core", "low", "other"))
    assert not manager.ready_now("idle")  # it was not loaded before: not restored


async def test_a_resumed_triton_keeps_its_models_without_loading_them_again(
    tmp_path: Path, database: Database
) -> None:
    manager, fake = await _manager(tmp_path, database)
    await manager.triton_down("liveness probe failed 3 times in a row")
    assert not manager.ready_now("core")
    await manager.triton_up()  # the index still has them: adopted, not reloaded
    assert fake.loads == [] and manager.ready_now("core") and manager.ready_now("other")


async def test_a_dead_stub_is_failed_then_reloaded_with_a_changed_parameter(
    tmp_path: Path, database: Database
) -> None:
    manager, fake = await _manager(tmp_path, database)
    manager.model_lost("other", "Stub process 'other_0_0' is not healthy.")
    assert manager.recovery.checking
    await asyncio.gather(*manager.recovery.checking.values())
    (name, config), = fake.loads
    assert name == "other" and config is not None
    assert config["parameters"]["a"] == {"string_value": "1"}  # its own config kept
    assert "warmctl.stub_restart" in config["parameters"]
    status = manager.status("other")
    assert status.state is ModelState.READY and "stub process died" in (status.reason or "")
    assert status.versions == ("1",)  # read back from Triton's index


async def test_models_an_external_triton_forgot_are_reloaded_and_repeated_losses_back_off(
    tmp_path: Path, database: Database
) -> None:
    manager, fake = await _manager(tmp_path, database)
    fake.entries = {}  # it restarted between two probes: every model is gone
    manager.model_lost("other", "Request for unknown model: 'other' is not found")
    await asyncio.gather(*manager.recovery.checking.values())
    assert [name for name, _ in fake.loads] == ["core", "low", "other"]
    assert all(manager.ready_now(n) for n in ("core", "low", "other"))
    for _ in range(2):
        fake.entries.pop("other")
        manager.model_lost("other", "not found")
        await asyncio.gather(*manager.recovery.checking.values())
    status = manager.status("other")
    assert status.state is ModelState.FAILED and "lost repeatedly" in (status.reason or "")
    assert status.retry_at is not None


async def test_lost_reports_while_triton_is_down_are_ignored(
    tmp_path: Path, database: Database
) -> None:
    manager, fake = await _manager(tmp_path, database)
    fake.down = True
    await manager.triton_down("restarting")
    manager.model_lost("other", "UNAVAILABLE")
    assert manager.recovery.checking == {}
