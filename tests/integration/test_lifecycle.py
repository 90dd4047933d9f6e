"""ModelManager against a real tritonserver and a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane.errors import Conflict, ModelLoadFailed, ModelNotFound
from controlplane.lifecycle.states import ModelState
from controlplane.loops import Loops
from controlplane.triton.client import TritonClient
from controlplane.triton.process import TritonProcess
from tests.integration.conftest import MakeManager, triton_client
from tests.support.repository import (
    add_example,
    add_identity,
    add_missing_weights,
    add_triton_rejected,
)
from tests.support.waiting import until


async def test_load_records_state_event_memory_and_breakdown(
    repo: Path, make_manager: MakeManager
) -> None:
    add_example(repo, "thumbnail_scorer")
    manager = make_manager()
    await manager.start()
    assert manager.state("thumbnail_scorer") == ModelState.COLD

    status = await manager.load("thumbnail_scorer")
    assert status.state == ModelState.READY
    assert status.memory_bytes is not None and status.memory_bytes > 50 * 2**20  # torch in RSS
    assert status.load_s is not None and status.load_s > 0
    [event] = manager.store.events("thumbnail_scorer")
    assert (event.action, event.trigger, event.outcome) == ("load", "api", "ok")
    assert event.triton_s is not None and 0 < event.triton_s <= event.duration_s  # type: ignore[operator]
    phases = event.details["load_phases"]  # type: ignore[index]
    assert {"import", "read_weights", "to_device", "initialize"} <= phases.keys()
    assert phases["import"] < phases["initialize"]
    row = manager.store.model("thumbnail_scorer")
    assert (row.state, row.memory_bytes) == ("ready", status.memory_bytes)

    status = await manager.unload("thumbnail_scorer")
    assert status.state == ModelState.COLD
    [entry] = await triton_client(manager).model_index("thumbnail_scorer")
    assert entry.state == "UNAVAILABLE"
    assert [e.action for e in manager.store.events("thumbnail_scorer")] == ["unload", "load"]


async def test_concurrent_loads_share_one_triton_load(
    repo: Path, make_manager: MakeManager, tmp_path: Path
) -> None:
    inits = tmp_path / "inits.log"
    add_identity(repo, "ident", init_log=str(inits), init_sleep_s="0.5")
    manager = make_manager()
    await manager.start()
    statuses = await asyncio.gather(*(manager.load("ident") for _ in range(20)))
    assert {s.state for s in statuses} == {ModelState.READY}
    assert len(inits.read_text().splitlines()) == 1
    assert len(manager.store.events("ident")) == 1


async def test_a_caller_giving_up_does_not_cancel_the_shared_load(
    repo: Path, make_manager: MakeManager
) -> None:
    add_identity(repo, "slow", init_sleep_s="1")
    manager = make_manager()
    await manager.start()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(manager.load("slow"), 0.3)
    assert manager.status("slow").busy
    status = await manager.load("slow")  # joins the same load
    assert status.state == ModelState.READY
    assert len(manager.store.events("slow")) == 1


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (add_triton_rejected, "preferred size must be <= max batch size"),
        (add_missing_weights, "no model file"),
        (lambda r, n: add_identity(r, n, init_fail="exploded on purpose"), "exploded on purpose"),
    ],
)
async def test_failed_load_leaves_state_failed_with_tritons_reason(
    repo: Path, make_manager: MakeManager, build: Callable[[Path, str], Path], reason: str
) -> None:
    build(repo, "broken")
    manager = make_manager()
    await manager.start()
    with pytest.raises(ModelLoadFailed, match=reason):
        await manager.load("broken")
    status = manager.status("broken")
    assert status.state == ModelState.FAILED
    assert status.reason is not None and reason in status.reason
    assert not status.busy
    [event] = manager.store.events("broken")
    assert event.outcome == "failed" and reason in (event.error or "")
    assert manager.store.model("broken").state == "failed"


async def test_unparseable_config_fails_the_load_with_our_reason(
    repo: Path, make_manager: MakeManager
) -> None:
    add_identity(repo, "garbled")
    (repo / "garbled" / "config.pbtxt").write_text("max_batch_size: {{{\n")
    manager = make_manager()
    await manager.start()
    with pytest.raises(ModelLoadFailed, match=r"config\.pbtxt"):
        await manager.load("garbled")
    assert manager.state("garbled") == ModelState.FAILED


async def test_hanging_load_times_out_and_leaves_no_stuck_lock(
    repo: Path, make_manager: MakeManager
) -> None:
    add_identity(repo, "hangs", init_sleep_s="60")
    add_identity(repo, "fine")
    manager = make_manager(load_timeout_s=2)
    await manager.start()
    t0 = time.monotonic()
    with pytest.raises(ModelLoadFailed, match="did not finish within 2s"):
        await manager.load("hangs")
    assert time.monotonic() - t0 < 6
    status = manager.status("hangs")
    assert (status.state, status.busy) == (ModelState.FAILED, False)
    assert manager.store.events("hangs")[0].outcome == "timeout"
    assert (await manager.load("fine")).state == ModelState.READY
    t1 = time.monotonic()
    with pytest.raises(ModelLoadFailed):  # the retry is bounded by the timeout, not a lock
        await manager.load("hangs")
    assert time.monotonic() - t1 < 6


async def test_a_load_that_outlives_its_timeout_is_adopted_when_triton_finishes_it(
    repo: Path, make_manager: MakeManager
) -> None:
    add_identity(repo, "slow", init_sleep_s="5")
    manager = make_manager(load_timeout_s=2)
    await manager.start()
    with pytest.raises(ModelLoadFailed, match="did not finish within 2s"):
        await manager.load("slow")
    assert manager.state("slow") == ModelState.FAILED
    # still loading in Triton: the failure (and the lazy-load back-off) stands meanwhile
    assert [e.state for e in await triton_client(manager).model_index("slow")] == ["LOADING"]
    assert "slow" not in await manager.reconcile()
    assert manager.state("slow") == ModelState.FAILED
    # Triton went on with the load: once it is done, the model is ours, memory and all
    assert await until(lambda: manager.state("slow") == ModelState.READY, 15)
    status = manager.status("slow")
    assert status.state == ModelState.READY and "after all" in (status.reason or "")
    assert manager.ready_now("slow")
    assert (await manager.unload("slow")).state == ModelState.COLD


async def test_a_load_that_outlives_its_timeout_and_then_fails_takes_tritons_reason(
    repo: Path, make_manager: MakeManager
) -> None:
    add_identity(repo, "doomed", init_sleep_s="3", init_fail="weights are corrupt")
    manager = make_manager(load_timeout_s=1)
    await manager.start()
    with pytest.raises(ModelLoadFailed, match="did not finish within 1s"):
        await manager.load("doomed")
    assert "weights are corrupt" not in (manager.status("doomed").reason or "")
    assert await until(
        lambda: "weights are corrupt" in (manager.status("doomed").reason or ""), 15)
    status = manager.status("doomed")
    assert status.state == ModelState.FAILED
    assert "after our load timed out" in (status.reason or "")
    assert "doomed" not in await manager.reconcile()  # settled: no more changes


async def test_periodic_reconcile_picks_up_what_changed_behind_our_back(
    repo: Path, make_manager: MakeManager
) -> None:
    add_identity(repo, "side")
    add_identity(repo, "ours")
    manager = make_manager()
    await manager.start()
    await manager.load("ours")
    # as the control plane runs it (app.py): every interval, a failed pass ends only itself
    reconciling = asyncio.create_task(Loops().every("reconcile", 0.2, manager.reconcile))
    try:
        await triton_client(manager).load("side")  # straight to Triton, not through the manager
        await triton_client(manager).unload("ours")
        assert await until(lambda: manager.state("side") == ModelState.READY, 10)
        assert await until(lambda: manager.state("ours") == ModelState.COLD, 10)
        assert "reconcile" in (manager.status("side").reason or "")
    finally:
        reconciling.cancel()


async def test_unknown_model_and_pinned_unload(repo: Path, make_manager: MakeManager) -> None:
    add_identity(repo, "keep")
    manager = make_manager(pinned=["keep"])
    await manager.start()
    with pytest.raises(ModelNotFound):
        await manager.load("nope")
    assert await manager.warm_pinned() == {}
    assert manager.status("keep").pinned
    with pytest.raises(Conflict, match="pinned"):
        await manager.unload("keep")
    assert manager.state("keep") == ModelState.READY  # refused, nothing lost
    assert (await manager.unload("keep", force=True)).state == ModelState.COLD


async def test_unload_waits_for_an_inflight_load(repo: Path, make_manager: MakeManager) -> None:
    add_identity(repo, "slow", init_sleep_s="1")
    manager = make_manager()
    await manager.start()
    load = asyncio.create_task(manager.load("slow"))
    await asyncio.sleep(0.2)
    status = await manager.unload("slow")
    assert load.done() and load.result().state == ModelState.READY
    assert status.state == ModelState.COLD
    assert [e.action for e in manager.store.events("slow")] == ["unload", "load"]


async def test_model_added_to_repository_after_start(
    repo: Path, make_manager: MakeManager
) -> None:
    manager = make_manager()
    await manager.start()
    assert manager.statuses() == []
    add_identity(repo, "late")
    assert (await manager.load("late")).state == ModelState.READY
    assert [s.name for s in manager.statuses()] == ["late"]


async def test_restart_reconciles_records_with_triton(
    repo: Path, make_manager: MakeManager, triton: TritonProcess
) -> None:
    for name in ("a", "b", "c"):
        add_identity(repo, name)
    first = make_manager()
    await first.start()
    await first.load("a")
    await first.load("b")
    # While no control plane runs, someone changes Triton behind our back.
    other = TritonClient(triton.grpc_url)
    await other.unload("a")
    await other.load("c")
    await other.close()
    # and the first control plane died mid-load: an open record is left behind
    first.store.begin_event("b", "load", "api", first.store.model("b").state_since)

    second = make_manager()
    await second.start()
    assert {s.name: s.state for s in second.statuses()} == {
        "a": ModelState.COLD, "b": ModelState.READY, "c": ModelState.READY}
    assert second.status("c").reason == "found ready in Triton at reconcile"
    assert second.store.model("a").state == "cold"
    assert all(e.outcome is not None for e in second.store.events("b"))
