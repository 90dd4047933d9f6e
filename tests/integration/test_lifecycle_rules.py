"""The lifecycle's rules against a real tritonserver: our additions never break a load that
plain Triton serves, failures back off, an operator's unload holds, refused models stay out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.errors import Conflict, ModelLoadFailed
from controlplane.lifecycle.backoff import BackoffPolicy
from controlplane.lifecycle.states import LoadPlan, ModelState
from controlplane.triton.repository import ModelSpec
from tests.integration.conftest import MakeManager, triton_client
from tests.support.repository import add_identity


class _AddsBrokenBatching:
    """Stands for any addition of ours (warm-up, placement) that Triton refuses: a preferred
    batch size above max_batch_size, rejected at config validation."""

    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        config = {**spec.config, "dynamic_batching": {"preferred_batch_size": [64]}}
        return LoadPlan(config=config, details={"warmup_version": 7})


def _inits(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_a_load_whose_additions_triton_refuses_loads_the_model_plain(
    repo: Path, make_manager: MakeManager
) -> None:
    add_identity(repo, "plain_ok")
    manager = make_manager(preparer=_AddsBrokenBatching())
    rejected: list[tuple[str, int, str]] = []

    async def on_rejected(model: str, plan: LoadPlan, reason: str) -> None:
        rejected.append((model, (plan.details or {})["warmup_version"], reason))

    manager.additions_rejected.append(on_rejected)
    await manager.start()

    status = await manager.load("plain_ok", trigger="gateway")

    assert status.state is ModelState.READY and status.failures == 0
    [(model, version, reason)] = rejected
    assert (model, version) == ("plain_ok", 7)
    assert "preferred size must be <= max batch size" in reason
    [event] = manager.store.events("plain_ok")
    assert event.outcome == "ok"
    assert event.details is not None and event.details["loaded_plain"] is True
    assert "preferred size" in event.details["additions_rejected"]
    # what Triton runs now is config.pbtxt as it is on disk
    config = await triton_client(manager).model_config("plain_ok")
    assert not config.get("dynamic_batching", {}).get("preferred_batch_size")


async def test_a_model_failing_plain_too_fails_with_both_reasons(
    repo: Path, make_manager: MakeManager
) -> None:
    add_identity(repo, "broken", init_fail="weights are corrupt")
    manager = make_manager(preparer=_AddsBrokenBatching())
    await manager.start()
    with pytest.raises(ModelLoadFailed, match="weights are corrupt") as info:
        await manager.load("broken")
    assert "preferred size" in info.value.reason  # the addition's failure is kept too
    assert manager.state("broken") is ModelState.FAILED


async def test_failed_loads_back_off_for_automatic_loads_not_for_the_operator(
    repo: Path, make_manager: MakeManager, tmp_path: Path
) -> None:
    inits = tmp_path / "inits.log"
    add_identity(repo, "broken", init_fail="missing module", init_log=str(inits))
    manager = make_manager(backoff=BackoffPolicy(initial_s=60, multiplier=2, max_s=600))
    await manager.start()

    with pytest.raises(ModelLoadFailed, match="missing module"):
        await manager.ensure_ready("broken")  # a request: the first load is tried
    assert _inits(inits) == 1
    first = manager.status("broken")
    assert first.failures == 1 and first.retry_at is not None
    assert 55 < first.retry_at - time.time() <= 60

    # every automatic caller waits out the back-off: no new Python stub per request or tick
    for trigger in ("gateway", "scheduler", "startup"):
        with pytest.raises(ModelLoadFailed, match=r"next automatic retry in \d+s"):
            await manager.load("broken", trigger=trigger)
    assert _inits(inits) == 1

    # the operator's explicit load tries at once, and a second failure doubles the wait
    with pytest.raises(ModelLoadFailed, match="missing module"):
        await manager.load("broken", trigger="api")
    assert _inits(inits) == 2
    second = manager.status("broken")
    assert second.failures == 2 and second.retry_at is not None
    assert 115 < second.retry_at - time.time() <= 120

    # release ends the back-off: the next request tries again
    manager.release("broken")
    with pytest.raises(ModelLoadFailed, match="missing module"):
        await manager.ensure_ready("broken")
    assert _inits(inits) == 3


async def test_an_operators_unload_holds_the_model_cold_until_load_or_release(
    repo: Path, make_manager: MakeManager, tmp_path: Path
) -> None:
    inits = tmp_path / "inits.log"
    add_identity(repo, "m", init_log=str(inits))
    manager = make_manager()
    await manager.start()
    await manager.ensure_ready("m")

    status = await manager.unload("m", trigger="api")
    assert (status.state, status.held) == (ModelState.COLD, True)
    for trigger in ("gateway", "scheduler"):
        with pytest.raises(Conflict, match="held cold until the operator"):
            await manager.load("m", trigger=trigger)
    assert _inits(inits) == 1

    # the scheduler's own unloads hold nothing
    manager.release("m")
    await manager.ensure_ready("m")
    await manager.unload("m", trigger="scheduler")
    assert not manager.held("m")
    await manager.ensure_ready("m")
    assert _inits(inits) == 3

    # an operator's load ends a hold too
    await manager.unload("m", trigger="api")
    assert (await manager.load("m", trigger="api")).held is False


async def test_disabled_models_and_names_triton_cannot_serve_are_never_loaded(
    repo: Path, make_manager: MakeManager, tmp_path: Path
) -> None:
    inits = tmp_path / "inits.log"
    add_identity(repo, "off", init_log=str(inits))
    spaced = add_identity(repo, "has space", init_log=str(inits))
    # the folder name is what Triton loads by; config.pbtxt names must match it
    (spaced / "config.pbtxt").write_text(
        (spaced / "config.pbtxt").read_text().replace('name: "has space"', ""))
    manager = make_manager(disabled={"off": "[models] disabled = true in the settings"})
    await manager.start()

    statuses: dict[str, Any] = {s.name: s for s in manager.statuses()}
    assert statuses["off"].disabled == "[models] disabled = true in the settings"
    assert "whitespace" in (statuses["has space"].disabled or "")
    for name, reason in (("off", "disabled"), ("has space", "whitespace")):
        for trigger in ("gateway", "api"):
            with pytest.raises(ModelLoadFailed, match=reason):
                await manager.load(name, trigger=trigger)
    assert _inits(inits) == 0
