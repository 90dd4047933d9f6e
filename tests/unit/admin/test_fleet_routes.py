"""/instances, drains and per-instance loads over HTTP, on a fleet of real ModelManagers whose
Tritons are scripted fakes (``tests/unit/fleet/support.py``: only Triton and the supervisor's
state are fake); and the liveness rule over several instances."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI

from controlplane.admin import routes_instances, routes_models
from controlplane.admin.errors import install_error_handlers
from controlplane.admin.routes_health import fleet_triton_state, liveness
from controlplane.fleet.fleet import Fleet
from controlplane.store.database import Database
from controlplane.triton.supervisor import TritonState
from tests.unit.fleet.support import make_fleet, runtime


async def _no_new_version(model: str | None = None) -> None:
    """The rollouts' check for a newer version folder (there is none here)."""


def _client(fleet: Fleet) -> httpx.AsyncClient:
    for rt in fleet.order:
        sup: Any = runtime(rt)[1]
        sup.state = TritonState.LIVE
        sup.snapshot = lambda: {"state": "live", "pid": None}
    app = FastAPI()
    install_error_handlers(app)
    # no instance joins here: the membership is only asked for those being provisioned
    app.state.control_plane = SimpleNamespace(
        fleet=fleet, compile_cache=None, membership=SimpleNamespace(joining={}),
        rollouts=SimpleNamespace(detect=_no_new_version),
        # no version records: every model loads what plain Triton would
        versions=SimpleNamespace(active=lambda model: None, target=lambda model: None))
    for router in (routes_instances.router, routes_instances.actions_router,
                   routes_models.router):
        app.include_router(router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


def _on(model: dict[str, Any]) -> dict[str, str]:
    return {r["instance"]: r["state"] for r in model["replicas"]}


async def test_load_on_one_instance_drain_it_and_resume(tmp_path: Path,
                                                        database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    a = fleet.order[0]
    async with _client(fleet) as http:
        listed = (await http.get("/instances")).json()
        assert [(i["name"], i["routable"], i["draining"]) for i in listed] == [
            ("a", True, False), ("b", True, False)]
        loaded = (await http.post("/models/hot/load", params={"instance": "b"})).json()
        assert loaded["state"] == "ready" and _on(loaded) == {"a": "cold", "b": "ready"}
        assert [r["routable"] for r in loaded["replicas"]] == [False, True]
        assert runtime(a)[0].loads == []  # nothing reached a's Triton

        report = (await http.post("/instances/b/drain")).json()
        assert report["moved"] == {"hot": "a"} and report["unloaded"] == ["hot"]
        assert report["after"]["draining"] and report["after"]["models"] == {}
        assert _on((await http.get("/models/hot")).json()) == {"a": "ready", "b": "cold"}

        last = await http.post("/instances/a/drain")  # b drained: a is the last serving
        assert last.status_code == 409 and last.json()["error"]["code"] == "conflict"
        assert a.routable and not a.draining
        forced = await http.post("/instances/a/drain", params={"force": "true"})
        assert forced.status_code == 200 and forced.json()["unloaded"] == ["hot"]
        assert not fleet.serving

        for name in ("a", "b"):
            resumed = (await http.post(f"/instances/{name}/resume")).json()
            assert resumed["routable"] and not resumed["draining"]
        assert (await http.post("/instances/c/resume")).json()["error"]["code"] == "not_found"
        actions = (await http.get("/fleet/actions")).json()
        assert [(x["kind"], x["instance"]) for x in actions] == [
            ("drain", "a"), ("drain", "b"), ("drain load", "a")]

        everywhere = (await http.post("/models/rare/load")).json()  # the fleet picks one
        assert list(_on(everywhere).values()).count("ready") == 1
        gone = (await http.post("/models/rare/unload")).json()
        assert gone["state"] == "cold" and all(r["held"] for r in gone["replicas"])
        released = (await http.post("/models/rare/release")).json()
        assert not any(r["held"] for r in released["replicas"])


def test_liveness_over_several_instances() -> None:
    live, down, failed = TritonState.LIVE, TritonState.RESTARTING, TritonState.FAILED
    assert liveness([live], False, False) == "ok"
    assert liveness([failed], False, False) == "unhealthy"  # one instance, as before fleets
    assert liveness([live, failed], False, False) == "degraded"  # a serves: not restarted
    assert liveness([down, failed], False, False) == "degraded"  # one recovers by itself
    assert liveness([live], False, False, store_ok=False) == "degraded"  # writes queued
    assert liveness([failed], False, False, store_ok=False) == "unhealthy"
    assert liveness([failed, TritonState.STOPPED], False, False) == "unhealthy"
    assert liveness([live, live], True, False) == "degraded"
    assert liveness([live, live], False, True) == "unhealthy"
    assert fleet_triton_state([down]) == "restarting"
    assert fleet_triton_state([down, live]) == "live"
    assert fleet_triton_state([failed, down]) == "failed"
