"""A whole control plane on PostgreSQL (``database_url``), with a real tritonserver: its
lifecycle records, the traffic it records and rolls up, the warm-up configs it stores, the
instances added while it runs and the rollouts' records all land in the PostgreSQL database,
and a second control plane on the same database (another data directory) finds them.

This runs in every test run (the PostgreSQL of ``tests/support/postgres.py``; under
``CI=true`` a missing server fails it). The other integration tests run on PostgreSQL with
``WARMCTL_TEST_DB=postgresql``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from controlplane.app import ControlPlane
from controlplane.config import Settings
from controlplane.store.instances import InstanceStore
from controlplane.store.models import (
    FleetInstanceRecord,
    LoadEvent,
    ModelRecord,
    RequestRecord,
    ShapeStat,
    UsageMinute,
    WarmupConfig,
)
from controlplane.store.rollouts import RolloutStore
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import add_identity
from tests.support.waiting import until

SETTINGS: dict[str, Any] = {
    "models": {"pinned": {"pinned": True}},
    "scheduler": {"enabled": False},
    "traffic": {"flush_interval_s": 0.25},
}


def _infer(cp: ControlPlane, model: str, values: list[list[float]], times: int) -> None:
    with gateway_client(cp) as client:
        for _ in range(times):
            out = client.infer(model, identity_input(values), client_timeout=60)
            assert out.as_numpy("OUTPUT0").tolist() == values


@asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    try:
        yield cp
    finally:
        await cp.stop()


async def _admin(cp: ControlPlane, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=60) as http:
        return await http.request(method, path, **kw)


async def test_a_control_plane_keeps_its_records_in_postgresql(
        repo: Path, tmp_path: Path, make_settings: Callable[..., Settings],
        postgres_url: str) -> None:
    for name in ("pinned", "cold"):
        add_identity(repo, name)
    first = make_settings(database_url=postgres_url, data_dir=tmp_path / "first",
                          gateway={"port": 0}, **SETTINGS)
    async with _running(first) as cp:
        row_id, version = await _records_land_in_postgresql(cp)

    # another control plane, another data directory, the same database: it is all there
    second_settings = make_settings(database_url=postgres_url, data_dir=tmp_path / "second",
                                    gateway={"port": 0}, **SETTINGS)
    async with _running(second_settings) as second:
        assert not (tmp_path / "second" / "controlplane.db").exists()
        with second.database.session() as session:
            assert session.scalar(select(func.sum(UsageMinute.requests))
                                  .where(UsageMinute.model == "pinned")) == 10
            assert session.scalar(select(func.count()).select_from(WarmupConfig)
                                  .where(WarmupConfig.model == "pinned")) == 2
            assert session.scalars(select(FleetInstanceRecord.name)).all() == []
            # the lifecycle's rows are the first one's (a row per model, not two)
            assert session.scalar(select(func.count()).select_from(ModelRecord)
                                  .where(ModelRecord.instance == "default")) == 2
        shown = (await _admin(second, "GET", "/models/pinned/rollouts")).json()
        assert [(r["id"], r["state"]) for r in shown] == [(row_id, "rolled_back")]
        latest = (await _admin(second, "GET", "/models/pinned/warmup-config")).json()
        assert latest["version"] == version


async def _records_land_in_postgresql(cp: ControlPlane) -> tuple[int, int]:
    """Exercise the first control plane; returns (the rollout's id, the warm-up version)."""
    assert cp.database.engine.dialect.name == "postgresql"

    # traffic: 5 + 3 requests of two shapes to the pinned model, one to a cold one (a load
    # by the gateway); flushed, rolled up per minute and per shape by the upserts
    await asyncio.to_thread(_infer, cp, "pinned", [[1.0, 2.0]], 5)
    await asyncio.to_thread(_infer, cp, "pinned", [[1.0], [2.0]], 3)
    await asyncio.to_thread(_infer, cp, "cold", [[3.0]], 1)
    assert cp.recorder is not None
    await cp.recorder.flush()
    assert await cp.database.writes.drain(30)
    # the second flush adds to the same minute's row (ON CONFLICT DO UPDATE, not a new row)
    await asyncio.to_thread(_infer, cp, "pinned", [[1.0, 2.0]], 2)
    await cp.recorder.flush()
    assert await cp.database.writes.drain(30)
    with cp.database.session() as session:
        usage = session.execute(select(func.sum(UsageMinute.requests),
                                       func.sum(UsageMinute.errors))
                                .where(UsageMinute.model == "pinned")).one()
        shapes = dict(session.execute(select(ShapeStat.signature, ShapeStat.count)
                                      .where(ShapeStat.model == "pinned")).all())
        requests = session.scalar(select(func.count()).select_from(RequestRecord)
                                  .where(RequestRecord.model == "pinned"))
        cold_requests = session.scalars(select(RequestRecord.cold)
                                        .where(RequestRecord.model == "cold")).all()
    assert tuple(usage) == (10, 0) and requests == 10
    assert sorted(shapes.values()) == [3, 7]
    assert cold_requests == [True]
    served = (await _admin(cp, "GET", "/models/pinned/usage")).json()
    assert sum(p["requests"] for p in served["points"]) == 10

    # the lifecycle's records: the pinned load at start, the gateway's load of "cold"
    with cp.database.session() as session:
        events = {name: [(e.action, e.trigger, e.outcome) for e in session.scalars(
            select(LoadEvent).join(ModelRecord).where(ModelRecord.name == name)
            .order_by(LoadEvent.id))] for name in ("pinned", "cold")}
        states = dict(session.execute(select(ModelRecord.name, ModelRecord.state)).all())
    assert events["cold"] == [("load", "gateway", "ok")]
    assert [(a, o) for a, _, o in events["pinned"]] == [("load", "ok")]
    assert states == {"pinned": "ready", "cold": "ready"}

    # the first load stored version 1 (from the config alone: no traffic yet); one
    # generated from that traffic is stored as version 2
    regenerated = await _admin(cp, "POST", "/models/pinned/warmup-config/regenerate")
    assert regenerated.status_code == 200, regenerated.text
    version = regenerated.json()["version"]
    with cp.database.session() as session:
        stored = session.scalars(select(WarmupConfig).where(WarmupConfig.model == "pinned")
                                 .order_by(WarmupConfig.version)).all()
    assert [(c.version, c.default) for c in stored] == [(1, True), (2, False)]
    assert version == 2 and stored[1].samples and stored[1].coverage == 1.0

    # an instance added while it runs: stored before the answer, removed with it
    added = await _admin(cp, "POST", "/instances", json={"name": "b"})
    assert added.status_code == 202, added.text
    stored_instances = await InstanceStore(cp.database).added()
    assert list(stored_instances) == ["b"] and stored_instances["b"][1] == "operator"
    assert stored_instances["b"][0].get("provider", "embedded") == "embedded"
    assert await until(lambda: cp.membership.get("b").state.value == "serving", 120)
    removed = await _admin(cp, "DELETE", "/instances/b")
    assert removed.status_code in (200, 202), removed.text
    assert await until(lambda: "b" not in cp.fleet.runtimes, 60)
    assert await InstanceStore(cp.database).added() == {}

    # the rollouts' records: created, moved on, listed through the admin API
    rollouts = RolloutStore(cp.database)
    row = await rollouts.create("pinned", "1", "2", "operator", {"steps": [50.0, 100.0]},
                                "operator asked")
    row.state, row.step, row.share = "shifting", 0, 0.5
    row.verification = {"samples": 4, "failures": 0}
    await rollouts.save(row)
    listed = (await _admin(cp, "GET", "/models/pinned/rollouts")).json()
    assert [(r["id"], r["state"], r["step"], r["share"], r["verification"]) for r in listed] == [
        (row.id, "shifting", 0, 0.5, {"samples": 4, "failures": 0})]
    row.state, row.share = "rolled_back", 0.0
    await rollouts.save(row)
    assert await rollouts.unfinished() == []
    return row.id, version
