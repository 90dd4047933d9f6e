"""Instances joining and leaving a running fleet of real embedded tritonservers (issue 18).

``POST /instances`` starts one while clients send requests: it is ``provisioning``, then
``warming`` while it loads the models planned for it, and gets no request before its pinned
model is ready there; then ``serving``. ``DELETE /instances/{name}`` drains it under load
(no request fails) and retires it; it stays in the store until then, and an added instance
comes back after a restart of the control plane. The tests run in order on one control plane.
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
from controlplane.cli import main
from controlplane.config import InstanceSettings, Settings, load_settings
from controlplane.lifecycle.states import ModelState
from tests.conftest import ROOT
from tests.support.load import ClientLoops
from tests.support.repository import add_identity
from tests.support.waiting import until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


def _settings(tmp: Path) -> Settings:
    repo = tmp / "repository"
    if not repo.exists():
        add_identity(repo, "hot")
        add_identity(repo, "other")
    return load_settings(
        data_dir=tmp / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0}, scheduler={"enabled": False},
        triton={"stop_timeout_s": 5, "load_timeout_s": 60},
        instances={"a": InstanceSettings()},
        fleet={"pinned_replicas": 2, "drain_timeout_s": 10, "ramp_s": 0},
        models={"hot": {"pinned": True}})


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("elastic")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cp(tmp: Path) -> AsyncIterator[ControlPlane]:
    control = ControlPlane(_settings(tmp))
    await control.start(wait_pinned=True)
    yield control
    await control.stop()


async def _call(cp: ControlPlane, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=60) as http:
        return await http.request(method, path, **kw)


async def test_a_joining_instance_gets_no_request_before_its_models_are_warm(
        cp: ControlPlane) -> None:
    clients = ClientLoops(cp, "hot").start()
    try:
        await asyncio.sleep(0.5)
        response = await _call(cp, "POST", "/instances", json={"name": "b"})
        assert response.status_code == 202, response.text
        assert response.json()["state"] == "provisioning"
        assert response.json()["origin"] == "operator"
        # watch it join: every state it is seen in, what b served then, whether hot was warm
        seen: list[tuple[str, int, bool]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rt = cp.membership.get("b")
            requests = rt.upstream.requests if rt.upstream is not None else 0
            warm = rt.manager is not None and rt.manager.ready_now("hot")
            seen.append((rt.state.value, requests, warm))
            if rt.state.value == "serving":
                break
            await asyncio.sleep(0.005)
        states = list(dict.fromkeys(s for s, _, _ in seen))
        assert states == ["provisioning", "warming", "serving"], states
        # no request reached b before it served, and hot was warm there before that
        assert all(requests == 0 for state, requests, _ in seen if state != "serving")
        assert all(warm for state, _, warm in seen if state == "serving")
        b = cp.fleet.runtimes["b"]
        assert await until(lambda: b.upstream is not None and b.upstream.requests > 20, 20)
        view = (await _call(cp, "GET", "/instances/b")).json()
        assert view["state"] == "serving" and view["models"] == {"hot": "ready"}, view
        assert "warm in" in view["state_reason"]
    finally:
        failures = await clients.finish()
    assert failures == []
    # nobody waited for a load: b joined warm, a kept serving meanwhile
    assert cp.membership.warm_up_s and cp.membership.warm_up_s[-1] < 120


async def test_bad_requests_are_refused_by_name(cp: ControlPlane) -> None:
    r = await _call(cp, "POST", "/instances", json={"name": "b"})
    assert r.status_code == 409 and "already in the fleet" in r.text
    r = await _call(cp, "POST", "/instances", json={"name": "../x"})
    assert r.status_code == 400 and "instance names" in r.text
    r = await _call(cp, "POST", "/instances", json={"name": "c", "provider": "static"})
    assert r.status_code == 400 and "url" in r.text
    r = await _call(cp, "POST", "/instances", json={"name": "c", "grpc_prot": 1})
    assert r.status_code == 400 and "grpc_prot" in r.text
    r = await _call(cp, "DELETE", "/instances/nope")
    assert r.status_code == 404
    assert "c" not in cp.fleet.runtimes and "c" not in cp.membership.joining


async def test_an_added_instance_is_stored(cp: ControlPlane) -> None:
    stored = await cp.membership.records.added()  # type: ignore[union-attr]
    assert list(stored) == ["b"] and stored["b"][1] == "operator"


async def test_removal_under_load_fails_no_request(cp: ControlPlane) -> None:
    clients = ClientLoops(cp, "hot").start()
    try:
        await asyncio.sleep(0.5)
        b = cp.fleet.runtimes["b"]
        before = b.upstream.requests if b.upstream is not None else 0
        response = await _call(cp, "DELETE", "/instances/b")
        assert response.status_code == 202, response.text
        assert await until(lambda: "b" not in cp.fleet.runtimes, 60)
        assert b.state.value == "retired"
        await asyncio.sleep(0.5)  # clients go on with a alone
    finally:
        failures = await clients.finish()
    assert failures == []
    assert before > 0
    gone = await _call(cp, "GET", "/instances/b")
    assert gone.status_code == 404 and "retired" in gone.text
    assert await cp.membership.records.added() == {}  # type: ignore[union-attr]
    assert cp.fleet.state("hot") is ModelState.READY


async def test_the_last_serving_instance_is_not_removed(cp: ControlPlane) -> None:
    r = await _call(cp, "DELETE", "/instances/a")
    assert r.status_code == 409 and "last one serving" in r.text


async def test_an_added_instance_survives_a_restart(cp: ControlPlane, tmp: Path) -> None:
    # through the CLI, as an operator would
    code = await asyncio.to_thread(main, ["--admin-url", cp.admin_url, "instances", "add",
                                          "c", "--set", "memory_budget_mb=4096"])
    assert code == 0
    assert await until(lambda: cp.membership.get("c").state.value == "serving", 120)
    await cp.stop()
    again = ControlPlane(_settings(tmp))
    await again.start(wait_pinned=True)
    try:
        c = again.fleet.runtimes["c"]
        assert c.origin == "operator" and c.spec.memory_budget_mb == 4096
        assert c.state.value == "serving"
    finally:
        await again.stop()
