"""The admin API, /metrics and the CLI over a fleet of two embedded tritonservers (issue 10):
instances listed, a load on one named instance, a drain through the API that moves a needed
model first, the refusal to drain the last serving instance, a resume through the CLI.

One control plane for the module (two real Tritons start once); the tests run in order and
the later ones build on the state the earlier ones left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from controlplane.app import ControlPlane
from controlplane.cli import main
from controlplane.config import InstanceSettings, load_settings
from controlplane.lifecycle.states import ModelState
from tests.conftest import ROOT
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import add_identity

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ControlPlane]:
    tmp = tmp_path_factory.mktemp("admin-fleet")
    repo = tmp / "repository"
    add_identity(repo, "pinned")
    add_identity(repo, "m")
    # no scheduler: no replica plan either, so a drain treats every resident model as needed
    settings = load_settings(
        data_dir=tmp / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0}, scheduler={"enabled": False},
        triton={"stop_timeout_s": 5, "load_timeout_s": 60},
        instances={"a": InstanceSettings(), "b": InstanceSettings()},
        models={"pinned": {"pinned": True}})
    control = ControlPlane(settings)
    await control.start(wait_pinned=True)
    yield control
    await control.stop()


async def _call(cp: ControlPlane, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=60) as http:
        return await http.request(method, path, **kw)


async def _metrics(cp: ControlPlane) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = (await _call(cp, "GET", "/metrics")).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _on(model: dict[str, Any]) -> dict[str, str]:
    return {r["instance"]: r["state"] for r in model["replicas"]}


async def test_every_instance_is_listed_checked_and_measured(cp: ControlPlane) -> None:
    listed = (await _call(cp, "GET", "/instances")).json()
    assert [i["name"] for i in listed] == ["a", "b"]
    pids = set()
    for inst in listed:
        assert inst["state"] == "serving" and inst["triton_state"] == "live", inst
        assert inst["routable"] and not inst["draining"], inst
        assert inst["provider"] == "embedded" and inst["url"]
        assert inst["models"] == {"pinned": "ready"}  # pinned_replicas = 2: on both
        pids.add(inst["triton"]["pid"])
    assert len(pids) == 2 and None not in pids  # two tritonservers of their own
    one = (await _call(cp, "GET", "/instances/b")).json()
    assert one["name"] == "b" and one["triton"]["pid"] in pids
    unknown = await _call(cp, "GET", "/instances/nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"

    health = await _call(cp, "GET", "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert set(health.json()["detail"]["instances"]) == {"a", "b"}
    assert (await _call(cp, "GET", "/readyz")).status_code == 200
    triton_b = (await _call(cp, "GET", "/triton", params={"instance": "b"})).json()
    assert triton_b["instance"] == "b" and triton_b["pid"] == one["triton"]["pid"]
    assert (await _call(cp, "GET", "/triton", params={"instance": "c"})).status_code == 404

    models = {m["name"]: m for m in (await _call(cp, "GET", "/models")).json()}
    assert _on(models["pinned"]) == {"a": "ready", "b": "ready"}
    assert models["m"]["state"] == "cold" and _on(models["m"]) == {"a": "cold", "b": "cold"}

    s = await _metrics(cp)
    for name in ("a", "b"):
        on = frozenset({("triton_instance", name)})
        assert s[("warmctl_triton_up", on)] == 1
        assert s[("warmctl_instance_outstanding_requests", on)] == 0
        assert s[("warmctl_instance_draining", on)] == 0
        assert s[("warmctl_model_state", frozenset(
            {("triton_instance", name), ("model", "pinned"), ("state", "ready")}))] == 1
    status = (await _call(cp, "GET", "/status")).json()
    assert [i["name"] for i in status["instances"]] == ["a", "b"]
    # the page's replicas column: ready on both instances; no scheduler, so no plan
    shown = {m["name"]: (m["replicas"], m["planned_replicas"], m["instances_per_replica"])
             for m in status["models"]}
    assert shown == {"pinned": (2, None, 1), "m": (0, None, 1)}


async def test_load_on_b_then_drain_b_moves_it_and_resume(
        cp: ControlPlane, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = await _call(cp, "POST", "/models/m/load", params={"instance": "b"})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["state"] == "ready"
    assert _on(loaded.json()) == {"a": "cold", "b": "ready"}  # on b only
    a, b = cp.fleet.runtimes["a"], cp.fleet.runtimes["b"]
    assert a.manager is not None and a.manager.state("m") is ModelState.COLD
    nowhere = await _call(cp, "POST", "/models/m/load", params={"instance": "nope"})
    assert nowhere.status_code == 404 and "unknown instance" in nowhere.json()["error"]["message"]
    await asyncio.to_thread(_infer, cp, "m")

    drained = await _call(cp, "POST", "/instances/b/drain")
    assert drained.status_code == 200, drained.text
    report = drained.json()
    # m had no other replica: loaded on a before b let it go; pinned was on a already
    assert report["moved"] == {"m": "a", "pinned": "already ready elsewhere"}
    assert sorted(report["unloaded"]) == ["m", "pinned"] and report["errors"] == {}
    assert report["in_flight_left"] == 0
    after = report["after"]
    assert after["draining"] and not after["routable"] and after["models"] == {}
    model = (await _call(cp, "GET", "/models/m")).json()
    assert model["state"] == "ready" and _on(model) == {"a": "ready", "b": "cold"}
    assert [e["instance"] for e in model["events"][:2]] == ["b", "a"]  # unload b, load a
    await asyncio.to_thread(_infer, cp, "m")  # still served, by a

    last = await _call(cp, "POST", "/instances/a/drain")  # b drained: a serves alone
    assert last.status_code == 409 and last.json()["error"]["code"] == "conflict"
    assert a.routable
    health = (await _call(cp, "GET", "/healthz")).json()
    assert health["status"] == "ok" and health["detail"]["instances"]["b"]["draining"]
    s = await _metrics(cp)
    assert s[("warmctl_instance_draining", frozenset({("triton_instance", "b")}))] == 1
    assert s[("warmctl_fleet_actions_total", frozenset(
        {("triton_instance", "b"), ("kind", "drain"), ("outcome", "unloaded")}))] == 2
    actions = (await _call(cp, "GET", "/fleet/actions")).json()
    assert {(x["kind"], x["model"], x["instance"]) for x in actions} >= {
        ("drain", "m", "b"), ("drain", "pinned", "b")}

    url = ["--admin-url", cp.admin_url]
    assert await asyncio.to_thread(main, ["instances", *url]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["a"][3] == "yes" and rows["b"][3] == "draining"
    assert await asyncio.to_thread(main, ["resume", "b", *url]) == 0
    assert "b: routable" in capsys.readouterr().out
    assert b.routable and not b.draining
    assert await asyncio.to_thread(main, ["load", "m", "--instance", "b", *url]) == 0
    assert capsys.readouterr().out.startswith("m: ready on b")
    model = (await _call(cp, "GET", "/models/m")).json()
    assert _on(model) == {"a": "ready", "b": "ready"}


def _infer(cp: ControlPlane, model: str) -> None:
    with gateway_client(cp) as client:
        out = client.infer(model, identity_input([[3.0]])).as_numpy("OUTPUT0")
    assert out is not None and float(out[0][0]) == 3.0
