"""The manager's load, reload and unload paths against a scripted fake Triton port.

The fake (``fake_port.py``) stands behind the narrow port only; every transition these tests
cause is checked against the table (strict mode raises on one missing from it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane.errors import DeadlineExceeded, ModelLoadFailed, TritonUnavailable
from controlplane.lifecycle import reconcile
from controlplane.lifecycle.backoff import BackoffPolicy
from controlplane.lifecycle.manager import ModelManager
from controlplane.lifecycle.states import (
    Cause,
    IllegalTransition,
    LoadPlan,
    ModelKey,
    ModelState,
)
from controlplane.store.database import Database
from controlplane.store.lifecycle import LifecycleStore
from controlplane.triton.repository import ModelRepository, ModelSpec
from tests.support.repository import add_identity
from tests.unit.lifecycle.fake_port import (
    FakeTriton,
    after,
    refuse,
    succeed,
    time_out,
    unreachable,
)

MakeManager = Callable[..., Awaitable[tuple[ModelManager, FakeTriton]]]


@pytest.fixture
def make(tmp_path: Path, database: Database) -> MakeManager:
    async def make(**options: Any) -> tuple[ModelManager, FakeTriton]:
        repo = tmp_path / "repo"
        for name in ("m", "other"):
            add_identity(repo, name)
        fake = FakeTriton()
        manager = ModelManager(instance=fake, repository=ModelRepository(repo),
                               store=LifecycleStore(database, "fake"), **options)
        manager.strict_transitions = True
        await manager.start()
        return manager, fake
    return make


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def test_concurrent_callers_share_one_load_and_learn_its_version(make: MakeManager) -> None:
    manager, fake = await make()
    gate = asyncio.Event()
    fake.load_script["m"] = [after(gate, succeed("2", "3"))]
    callers = [asyncio.create_task(manager.ensure_ready("m")) for _ in range(5)]
    await until(lambda: len(fake.loads) == 1)
    assert manager.status("m").state is ModelState.LOADING and manager.status("m").busy
    gate.set()
    await asyncio.gather(*callers)
    assert len(fake.loads) == 1
    status = manager.status("m")
    assert status.state is ModelState.READY and status.memory_bytes == 1000
    assert status.versions == ("2", "3")
    assert status.keys == (ModelKey("m", "2"), ModelKey("m", "3"))
    [event] = manager.store.events("m")
    assert event.outcome == "ok" and event.details is not None
    assert event.details["versions"] == ["2", "3"]


async def test_a_cancelled_caller_does_not_cancel_the_load(make: MakeManager) -> None:
    manager, fake = await make()
    gate = asyncio.Event()
    fake.load_script["m"] = [after(gate, succeed())]
    first = asyncio.create_task(manager.load("m", trigger="gateway"))
    await until(lambda: len(fake.loads) == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert manager.status("m").state is ModelState.LOADING
    second = asyncio.create_task(manager.load("m", trigger="gateway"))  # joins the same load
    gate.set()
    assert (await second).state is ModelState.READY
    assert len(fake.loads) == 1

    fake.load_script["other"] = [after(gate := asyncio.Event(), succeed())]
    only = asyncio.create_task(manager.load("other", trigger="gateway"))
    await until(lambda: len(fake.loads) == 2)
    only.cancel()  # the only caller gives up: the load still finishes
    gate.set()
    await until(lambda: not manager.status("other").busy)
    assert manager.status("other").state is ModelState.READY


async def test_a_timed_out_load_takes_tritons_late_verdict(
    make: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "FOLLOW_FIRST_S", 0.001)
    monkeypatch.setattr(reconcile, "FOLLOW_MAX_S", 0.001)
    manager, fake = await make()
    gate = asyncio.Event()
    fake.load_script["m"] = [time_out()]
    fake.load_script["other"] = [after(gate, time_out())]
    with pytest.raises(ModelLoadFailed, match="did not finish within"):
        await manager.ensure_ready("m")
    status = manager.status("m")
    assert status.state is ModelState.FAILED and status.failures == 1
    assert manager.store.events("m")[0].outcome == "timeout"
    # Triton still runs our load: an unload would queue behind it, and a request must not
    # start a second load meanwhile
    assert (await manager.unload("m", trigger="scheduler")).state is ModelState.FAILED
    with pytest.raises(ModelLoadFailed, match="next automatic retry"):
        await manager.ensure_ready("m")
    assert fake.unloads == [] and len(fake.loads) == 1
    fake.set("m", "READY", versions=("1",))  # Triton finished it after all
    await until(lambda: manager.ready_now("m"))
    assert manager.status("m").versions == ("1",)

    other = asyncio.create_task(manager.ensure_ready("other"))
    await until(lambda: len(fake.loads) == 2)
    gate.set()
    with pytest.raises(ModelLoadFailed):
        await other
    fake.set("other", "UNAVAILABLE", "CUDA out of memory")  # ... or failed after all
    await until(lambda: "CUDA" in (manager.status("other").reason or ""))
    status = manager.status("other")
    assert status.state is ModelState.FAILED
    assert status.reason == "CUDA out of memory (after our load timed out)"


async def test_a_failed_load_backs_off_automatic_loads_but_not_the_operator(
    make: MakeManager
) -> None:
    manager, fake = await make(backoff=BackoffPolicy(initial_s=30.0))
    fake.load_script["m"] = [refuse("failed to load 'm': boom")]
    fake.details["m"] = "config.pbtxt: unexpected field 'bogus'"
    with pytest.raises(ModelLoadFailed, match="boom") as failure:
        await manager.ensure_ready("m")
    assert "unexpected field 'bogus'" in str(failure.value)  # Triton's log says why
    status = manager.status("m")
    assert status.state is ModelState.FAILED and status.failures == 1
    assert status.retry_at is not None and 28 < status.retry_at - time.time() <= 30
    for trigger in ("gateway", "scheduler"):
        with pytest.raises(ModelLoadFailed, match="next automatic retry in 30s"):
            await manager.load("m", trigger=trigger)
    assert len(fake.loads) == 1
    status = await manager.load("m", trigger="api")  # the operator's word: at once
    assert status.state is ModelState.READY and status.failures == 0
    assert status.retry_at is None and len(fake.loads) == 2


async def test_a_failed_reload_keeps_the_loaded_version_serving(make: MakeManager) -> None:
    manager, fake = await make()
    await manager.load("m")
    fake.load_script["m"] = [refuse("new config broken")]
    with pytest.raises(ModelLoadFailed, match="new config broken"):
        await manager.reload("m", trigger="drift")
    status = manager.status("m")
    assert status.state is ModelState.READY and manager.ready_now("m")
    assert (status.reason or "").startswith("reload failed, previous instance serving")
    assert status.versions == ("1",) and status.failures == 0
    reload, load = manager.store.events("m")[:2]
    assert (reload.action, reload.outcome, load.outcome) == ("reload", "failed", "ok")

    fake.load_script["m"] = [refuse("stub crashed", lose=True)]  # Triton lost it as well
    with pytest.raises(ModelLoadFailed, match="stub crashed"):
        await manager.reload("m", trigger="drift")
    status = manager.status("m")
    assert status.state is ModelState.FAILED and not manager.ready_now("m")
    assert status.versions == () and status.failures == 1


async def test_a_failed_unload_takes_tritons_view(make: MakeManager) -> None:
    manager, fake = await make()
    await manager.load("m")
    saved: list[str] = []

    async def save_statistics(name: str) -> None:
        saved.append(name)
    manager.before_unload.append(save_statistics)

    async def hangs(fake: FakeTriton, model: str) -> None:
        raise DeadlineExceeded("'m' still not unloaded after 60s (v1=READY)")
    fake.unload_script["m"] = [hangs]
    with pytest.raises(DeadlineExceeded):
        await manager.unload("m", trigger="scheduler")
    status = manager.status("m")
    assert status.state is ModelState.READY and status.versions == ("1",)
    assert "unload timeout" in (status.reason or "")
    assert manager.store.events("m")[0].outcome == "timeout"
    status = await manager.unload("m", trigger="scheduler")
    assert status.state is ModelState.COLD and status.versions == ()
    assert saved == ["m", "m"] and fake.unloads == ["m", "m"]
    assert not status.held  # an automatic unload holds nothing cold


class Warmup:
    """A preparer whose plan carries our additions (a config override)."""

    def __init__(self) -> None:
        self.plan = LoadPlan(config={"name": "m", "model_warmup": [{"name": "w"}]},
                             details={"warmup_version": 3})

    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        return self.plan


async def test_additions_refused_by_triton_then_the_model_loads_plain(make: MakeManager) -> None:
    warmup = Warmup()
    manager, fake = await make(preparer=warmup)
    rejected: list[tuple[str, LoadPlan, str]] = []

    async def mark_rejected(name: str, plan: LoadPlan, reason: str) -> None:
        rejected.append((name, plan, reason))
    manager.additions_rejected.append(mark_rejected)
    fake.load_script["m"] = [refuse("warm-up sample has the wrong shape")]
    status = await manager.load("m", trigger="gateway")
    assert status.state is ModelState.READY
    assert [config for _, config in fake.loads] == [warmup.plan.config, None]
    [(name, plan, reason)] = rejected
    assert (name, plan) == ("m", warmup.plan) and "wrong shape" in reason
    [event] = manager.store.events("m")
    assert event.details is not None and event.details["loaded_plain"] is True
    assert "wrong shape" in event.details["additions_rejected"]

    fake.load_script["other"] = [refuse("wrong shape"), refuse("model.py: SyntaxError")]
    with pytest.raises(ModelLoadFailed, match=r"SyntaxError.*also with warmctl's additions"):
        await manager.load("other", trigger="gateway")
    assert manager.status("other").state is ModelState.FAILED


async def test_triton_down_during_a_load_fails_it_and_restores_it_once_back(
    make: MakeManager
) -> None:
    manager, fake = await make()
    gate = asyncio.Event()
    fake.load_script["m"] = [after(gate, unreachable())]
    loading = asyncio.create_task(manager.load("m", trigger="scheduler"))
    await until(lambda: len(fake.loads) == 1)
    fake.down = True
    await manager.triton_down("tritonserver (pid 7) was killed by signal 9 (SIGKILL)")
    assert manager.status("m").state is ModelState.LOADING  # ours: it fails on its own
    assert manager.recovery.suspects == {"m": 1}
    with pytest.raises(TritonUnavailable, match="SIGKILL"):
        await manager.load("other", trigger="gateway")  # refused at once, not hung
    gate.set()
    with pytest.raises(ModelLoadFailed, match="unreachable"):
        await loading
    assert manager.status("m").state is ModelState.FAILED
    fake.down = False
    assert await manager.triton_up() == {"m": "ok"}  # failed because Triton died: no back-off
    assert manager.ready_now("m") and not manager.ready_now("other")
    assert len(fake.loads) == 2


async def test_triton_dying_during_loads_with_our_additions_rejects_them_the_second_time(
    make: MakeManager
) -> None:
    """Once may be a crash from elsewhere: the additions are tried again. Twice in a row,
    nothing loaded with them in between: rejected, and the model loads plain after."""
    warmup = Warmup()
    manager, fake = await make(preparer=warmup)
    rejected: list[str] = []

    async def mark_rejected(name: str, plan: LoadPlan, reason: str) -> None:
        rejected.append(reason)
    manager.additions_rejected.append(mark_rejected)
    fake.load_script["m"] = [unreachable(), succeed(), unreachable()]
    with pytest.raises(ModelLoadFailed, match="unreachable"):
        await manager.load("m", trigger="api")
    assert rejected == []  # once: suspect only
    assert (await manager.load("m", trigger="api")).state is ModelState.READY
    assert fake.loads[-1][1] == warmup.plan.config  # tried again, and it loaded: cleared
    await manager.unload("m", trigger="api")
    with pytest.raises(ModelLoadFailed, match="unreachable"):
        await manager.load("m", trigger="api")
    assert rejected == []  # a first time again, after a load that went well
    fake.load_script["m"] = [unreachable()]
    with pytest.raises(ModelLoadFailed, match="unreachable"):
        await manager.load("m", trigger="api")
    [reason] = rejected
    assert "Triton became unavailable during a load with our additions" in reason
    assert "second time in a row" in reason


async def test_a_transition_missing_from_the_table_raises_in_strict_mode_else_is_logged(
    make: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    manager, _ = await make()
    model = manager._models["m"]
    with pytest.raises(IllegalTransition, match="cold -> warming"):
        await manager._set(model, ModelState.WARMING, "probing", cause=Cause.PROBE)
    assert model.state is ModelState.COLD  # refused before anything changed
    manager.strict_transitions = False
    await manager._set(model, ModelState.WARMING, "probing", cause=Cause.PROBE)
    assert model.state is ModelState.WARMING  # applied: it follows what happened
    assert "illegal transition cold -> warming (probe)" in caplog.text


class GatedProbe:
    """A readiness probe that runs until the test opens its gate."""

    def __init__(self) -> None:
        self.started, self.gate = asyncio.Event(), asyncio.Event()

    async def probe(self, spec: ModelSpec) -> dict[str, Any]:
        self.started.set()
        await self.gate.wait()
        return {"probe_count": 1}


async def test_triton_down_while_warming_fails_the_load_and_restores_the_model(
    make: MakeManager
) -> None:
    probe = GatedProbe()
    manager, fake = await make(probe=probe)
    loading = asyncio.create_task(manager.load("m", trigger="gateway"))
    await probe.started.wait()
    assert manager.status("m").state is ModelState.WARMING and not manager.ready_now("m")
    fake.down, fake.entries = True, {}  # it died: a restarted one has nothing loaded
    await manager.triton_down("tritonserver exited with code 1")
    assert manager.status("m").state is ModelState.COLD and manager.recovery.wanted == {"m"}
    probe.gate.set()  # the probe's answer came from the Triton that is gone
    with pytest.raises(ModelLoadFailed, match="stopped serving during the load"):
        await loading
    assert manager.status("m").state is ModelState.FAILED and not manager.ready_now("m")
    fake.down = False
    assert await manager.triton_up() == {"m": "ok"}
    assert manager.ready_now("m") and len(fake.loads) == 2


async def test_a_restarted_triton_restores_what_it_had_not_a_pinned_model_served_elsewhere(
        make: MakeManager) -> None:
    manager, fake = await make(pinned=["m", "other"])
    await manager.load("m", trigger="replica")
    manager.elsewhere = lambda name: name == "other"  # another instance serves 'other'
    await manager.triton_down("tritonserver (pid 7) was killed by signal 9 (SIGKILL)")
    fake.entries.clear()
    assert await manager.triton_up() == {"m": "ok"}
    assert manager.state("other") is ModelState.COLD
    manager.elsewhere = lambda name: False  # now nobody does: this instance restores it
    await manager.triton_down("tritonserver (pid 8) was killed by signal 9 (SIGKILL)")
    fake.entries.clear()
    assert await manager.triton_up() == {"m": "ok", "other": "ok"}


async def test_a_quarantined_model_is_left_alone_until_the_operator_loads_it(
        make: MakeManager) -> None:
    manager, fake = await make()
    await manager.load("m", trigger="gateway")
    manager.quarantine("m", "its requests were in tritonserver at 2 crashes")
    await manager.triton_down("tritonserver (pid 7) was killed by signal 11 (SIGSEGV)")
    fake.entries.clear()
    assert await manager.triton_up() == {}  # not restored
    with pytest.raises(ModelLoadFailed, match="quarantined: its requests"):
        await manager.load("m", trigger="scheduler")
    assert manager.status("m").quarantined
    await manager.load("m", trigger="api")
    assert manager.ready_now("m") and manager.status("m").quarantined is None


class ScriptedProbe:
    """A readiness probe answering with the figures the test sets."""

    def __init__(self, figures: dict[str, Any]) -> None:
        self.figures = figures

    async def probe(self, spec: ModelSpec) -> dict[str, Any]:
        return dict(self.figures)


async def test_every_probe_failing_leaves_the_model_ready_and_says_so(
        make: MakeManager) -> None:
    """Probes never fail a load; the reason tells the operator that none was answered."""
    first = "default batch 1: " + "x" * 400
    probe = ScriptedProbe({"probe_count": 4, "probe_ok": 0, "probe_first_error": first,
                           "probe_error": f"{first}; another"})
    manager, fake = await make(probe=probe)
    status = await manager.load("m")
    assert status.state is ModelState.READY and manager.ready_now("m")
    assert status.reason == "ready, but all 4 warm-up probes failed: " + first[:197] + "..."
    event = manager.store.events("m", limit=1)[0]
    assert (event.outcome, event.probe_count) == ("ok", 4)

    probe.figures = {"probe_count": 4, "probe_ok": 1, "probe_error": "one of four failed"}
    assert (await manager.reload("m")).reason == "reloaded by api"  # one answered: no word
    probe.figures = {"probe_count": 1, "probe_ok": 0, "probe_error": "refused"}
    assert (await manager.reload("m", trigger="drift")).reason == \
        "reloaded by drift; ready, but its only warm-up probe failed: refused"
    probe.figures = {"probe": "none: ensemble"}  # no probe sent: nothing failed
    assert (await manager.reload("m")).reason == "reloaded by api"
    assert len(fake.loads) == 4
