"""Rollouts of new model versions on a real embedded tritonserver, under continuous load
(issue 20).

Each model serves version 1 while clients send requests; a version 2 folder appears and a
rollout starts (by itself for ``good``, through ``POST /models/{name}/rollouts`` for the
others). A good version 2 is verified, shifted to in steps and promoted with no failed and no
cold request; a NaN, a 10x slower, a partly failing and a disagreeing version 2 are each
rolled back before or at their first step, and no client answer beyond that step's share came
from them (each answer carries the number of the version that computed it). A rollout
interrupted by a restart of the control plane resumes and finishes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from controlplane.app import ControlPlane
from controlplane.config import InstanceSettings, Settings, load_settings
from tests.conftest import ROOT
from tests.support.load import VERSIONED, ClientLoops
from tests.support.versions import add_version
from tests.support.waiting import until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

KINDS = ("good", "nan", "slow", "errors", "disagree", "refused")
STEPS = [20.0, 60.0, 100.0]


def _settings(tmp: Path) -> Settings:
    repo = tmp / "repository"
    if not repo.exists():
        for kind in KINDS:
            add_version(repo, kind, "1")
    models: dict[str, Any] = {k: {"pinned": True, "sample_payloads": True} for k in KINDS}
    models["disagree"]["rollout"] = {"atol": 0.01}
    models["good"]["rollout"] = {"auto": True}
    return load_settings(
        data_dir=tmp / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0}, scheduler={"enabled": False},
        triton={"stop_timeout_s": 5, "load_timeout_s": 60, "reconcile_interval_s": 1},
        instances={"a": InstanceSettings()},
        traffic={"sample_per_shape": 16, "flush_interval_s": 0.5},
        rollouts={"auto": False, "steps": STEPS, "dwell_s": 3, "min_requests": 15},
        models=models)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollouts")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cp(tmp: Path) -> AsyncIterator[ControlPlane]:
    control = ControlPlane(_settings(tmp))
    await control.start(wait_pinned=True)
    yield control
    await control.stop()


def _clients(cp: ControlPlane, model: str) -> ClientLoops:
    """Two loops with inputs 1..9 in turn; each answer's version and whether it was right."""
    # tritonclient's default channel (one shared connection): one instance serves both
    # versions, and the split between them is per request, not per connection
    return ClientLoops(cp, model, n=2, pause_s=0.01, request=VERSIONED, channel_args=None)


async def _rollouts(cp: ControlPlane, model: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        response = await http.get(f"/models/{model}/rollouts")
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows


async def _finished(cp: ControlPlane, model: str, within_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        rows = await _rollouts(cp, model)
        if rows and rows[0]["state"] in ("promoted", "rolled_back", "aborted"):
            return rows[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"rollout of {model} not finished: {await _rollouts(cp, model)}")


def _cold(cp: ControlPlane, seen: list[Any], model: str) -> int:
    return sum(1 for o in seen if o.model == model and o.cold)


async def test_a_good_version_is_promoted_under_load_with_nothing_failed_or_cold(
        cp: ControlPlane, tmp: Path) -> None:
    seen: list[Any] = []
    assert cp.recorder is not None
    cp.recorder.on_observation.append(seen.append)
    clients = _clients(cp, "good").start()
    await asyncio.sleep(1.5)  # version 1 serves; its payloads are recorded
    add_version(tmp / "repository", "good", "2")  # noticed by itself (rollouts.auto)
    row = await _finished(cp, "good")
    await asyncio.sleep(1.0)
    await clients.finish()
    assert row["state"] == "promoted", row
    assert row["origin"] == "auto" and row["version"] == "2"
    assert row["verification"]["passed"] and row["verification"]["samples"] > 0
    assert clients.failed() == [] and _cold(cp, seen, "good") == 0
    versions = [a.version for a in clients.answers]
    assert versions[0] == 1.0 and versions[-1] == 2.0
    # never back to 1 once the last step served 2 alone
    last_one = max(i for i, v in enumerate(versions) if v == 1.0)
    assert all(v == 2.0 for v in versions[last_one + 1:])
    assert cp.versions.active("good") == "2" and cp.versions.target("good") is None
    status = cp.fleet.status("good")
    assert status.versions == ("2",)  # version 1 unloaded
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        view = (await http.get("/models/good")).json()
    assert (view["versions"], view["active_version"], view["target_version"]) == (
        ["2"], "2", None)
    assert "good" not in cp.fleet.splits


@pytest.mark.parametrize("kind", ["nan", "slow", "errors", "disagree", "refused"])
async def test_a_bad_version_is_rolled_back_before_it_serves_beyond_its_first_step(
        cp: ControlPlane, tmp: Path, kind: str) -> None:
    clients = _clients(cp, kind).start()
    await asyncio.sleep(1.5)
    add_version(tmp / "repository", kind, "2", kind=kind)
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        started = await http.post(f"/models/{kind}/rollouts", json={"version": "2"})
    assert started.status_code == 202, started.text
    assert started.json()["state"] == "verifying"
    row = await _finished(cp, kind)
    await asyncio.sleep(0.5)
    await clients.finish()
    assert row["state"] == "rolled_back", row
    from_v2 = [a for a in clients.answers if a.version == 2.0]
    share = len(from_v2) / max(1, len(clients.answers))
    # caught by the verification (no client saw it) or at the first step, within its share
    assert row["step"] <= 0, row
    assert share <= STEPS[0] / 100, (share, row["reason"])
    failures = clients.failed()
    if row["step"] < 0:  # caught before any traffic
        assert from_v2 == [] and failures == [], row["reason"]
        # refused: never loaded, so nothing to verify; otherwise the verification caught it
        assert (row["verification"] is None if kind == "refused"
                else not row["verification"]["passed"])
    assert cp.versions.active(kind) == "1" and cp.versions.target(kind) is None
    assert cp.fleet.status(kind).versions == ("1",)
    expected = {"nan": "NaN", "slow": "latency", "errors": "above 5", "disagree": "atol",
                "refused": "version 2 refuses to load"}  # Triton's own reason, quoted
    assert expected[kind] in row["reason"], row["reason"]


async def test_bad_requests_get_clear_errors(cp: ControlPlane) -> None:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        r = await http.post("/models/nope/rollouts", json={"version": "2"})
        assert r.status_code == 404
        r = await http.post("/models/good/rollouts", json={"version": "9"})
        assert r.status_code == 400 and "no version folder" in r.text
        r = await http.post("/models/good/rollouts", json={"version": "2"})
        assert r.status_code == 409 and "active one already" in r.text
        r = await http.post("/models/good/rollouts", json={"version": "../1"})
        assert r.status_code == 422
        r = await http.post("/models/good/rollouts/12345/pause")
        assert r.status_code == 409


async def test_an_operators_action_is_answered_with_its_effect(cp: ControlPlane,
                                                               tmp: Path) -> None:
    add_version(tmp / "repository", "errors", "3")  # a good version 3

    async def shifting() -> int:
        async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
            started = await http.post("/models/errors/rollouts", json={"version": "3"})
        assert started.status_code == 202, started.text
        assert await until(lambda: cp.rollouts.running.get("errors") is not None
                           and cp.rollouts.running["errors"].state == "shifting", 60)
        rid: int = started.json()["id"]
        return rid

    async def act(rid: int, action: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=cp.admin_url, timeout=60) as http:
            r = await http.post(f"/models/errors/rollouts/{rid}/{action}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    rid = await shifting()
    paused = await act(rid, "pause")
    assert paused["state"] == "paused" and paused["reason"] == "paused by the operator"
    assert (await act(rid, "resume"))["state"] == "shifting"
    aborted = await act(rid, "abort")
    assert aborted["state"] == "aborted" and cp.versions.active("errors") == "1"
    assert "errors" not in cp.fleet.splits  # every request back on version 1 when answered
    rid = await shifting()
    promoted = await act(rid, "promote")
    assert promoted["state"] == "promoted" and cp.versions.active("errors") == "3"


async def test_a_rollout_holds_its_step_while_triton_is_down(cp: ControlPlane,
                                                              tmp: Path) -> None:
    """Triton killed while a rollout shifts: no step is taken, nor the rollout judged, until
    a replica serves both versions again; then it goes on and is promoted."""
    add_version(tmp / "repository", "slow", "3")  # a good version 3
    clients = _clients(cp, "slow").start()
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        started = await http.post("/models/slow/rollouts", json={"version": "3"})
    assert started.status_code == 202, started.text
    assert await until(lambda: cp.rollouts.running.get("slow") is not None
                       and cp.rollouts.running["slow"].state == "shifting", 60), \
        [(r["state"], r["reason"]) for r in await _rollouts(cp, "slow")]
    row = cp.rollouts.running["slow"]
    assert cp.supervisor is not None and cp.supervisor.process is not None
    cp.supervisor.process.kill()  # SIGKILL: restarted and its models restored
    seen: list[tuple[float, bool, float]] = []  # (time, both versions serve, share)
    while row.state not in ("promoted", "rolled_back", "aborted"):
        seen.append((time.monotonic(), cp.rollouts._both_serve(row), row.share))
        assert len(seen) < 1200, seen[-5:]  # 2 minutes
        await asyncio.sleep(0.1)
    await clients.finish()
    assert row.state == "promoted", row.reason
    down = [i for i, (_, serving, _) in enumerate(seen) if not serving]
    assert down, "the outage was seen"
    # the outage: the first stretch without a replica serving both versions (the promotion
    # at the end serves the target alone: another such stretch, after the last step)
    first = last = down[0]
    while last + 1 < len(seen) and not seen[last + 1][1]:
        last += 1
    assert last + 1 < len(seen), "both versions served again before the promotion"
    # while no replica served both versions the share stayed where it was
    assert len({share for _, _, share in seen[first:last + 1]}) == 1, seen[first:last + 1]
    assert seen[last][0] - seen[first][0] > 1.0 and seen[last][2] < 1.0
    assert cp.versions.active("slow") == "3"


async def test_a_rollout_resumes_after_a_restart(cp: ControlPlane, tmp: Path) -> None:
    add_version(tmp / "repository", "nan", "3")  # a good version 3 of the same model
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        started = await http.post("/models/nan/rollouts", json={"version": "3"})
        assert started.status_code == 202, started.text
        rid = started.json()["id"]
    assert await until(lambda: cp.rollouts.running.get("nan") is not None
                       and cp.rollouts.running["nan"].state == "shifting", 60)
    await cp.stop()
    again = ControlPlane(_settings(tmp))
    await again.start(wait_pinned=True)
    try:
        assert again.rollouts.running["nan"].id == rid  # resumed, not started anew
        row = await _finished(again, "nan")
        assert row["id"] == rid and row["state"] == "promoted", row
        assert again.versions.active("nan") == "3"
    finally:
        await again.stop()
