"""A real data disk that fills up or turns read-only under load, with a real tritonserver
and real SQLite: models load and serve throughout, /healthz says degraded then ok, the
planning pass goes on, Triton killed meanwhile is restored, and every record made during the
fault is written once the disk is back (or counted as dropped: none are, here).

The filesystems are mounted by the test (``bench/faultkit.py``: a tmpfs for disk-full, an
ext4 image with immutable files for read-only); without root they are skipped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bench import faultkit
from controlplane.app import ControlPlane
from controlplane.store.models import LoadEvent, ModelRecord, RequestRecord
from tests.conftest import default_dialect
from tests.integration.conftest import StartControlPlane
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import add_identity
from tests.support.waiting import until

WHY_NOT = faultkit.cannot_mount()
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or ""),
    # these faults are of the data disk that holds SQLite's file; a PostgreSQL store is on
    # its server's disk, which this test cannot fill (the fault-injected unit tests of the
    # store, tests/unit/store, run on PostgreSQL too)
    pytest.mark.skipif(default_dialect() == "postgresql",
                       reason="a full or read-only data disk is a SQLite store's fault"),
]

SETTINGS: dict[str, Any] = {
    "models": {"pinned": {"pinned": True}},
    "scheduler": {"interval_s": 1.0},
    "traffic": {"flush_interval_s": 0.25},
    "store": {"probe_interval_s": 0.5, "stall_after_s": 2.0},
    "triton": {"supervision": {"probe_interval_s": 0.5, "probe_timeout_s": 0.5,
                               "probe_misses": 2, "restart_delay_s": 0.2}},
}


@pytest.fixture
def disk_full(tmp_path: Path) -> Iterator[Path]:
    with faultkit.tmpfs(tmp_path / "data", 48) as data:
        yield data


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    with faultkit.ext4(tmp_path / "data", 64) as data:
        yield data


def _send(client: Any) -> None:
    client.infer("pinned", identity_input([[1.0, 2.0]]), client_timeout=10)


async def _health(cp: ControlPlane, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=10) as http:
        return await http.get(path)


async def _status(cp: ControlPlane) -> str:
    return str((await _health(cp, "/healthz")).json()["status"])


async def _during_and_after(cp: ControlPlane, begin: Any, end: Any,
                            *fault_words: str) -> None:
    """Everything that must hold across one fault: see the module's doc."""
    load = faultkit.SteadyLoad(_send, lambda: gateway_client(cp), rate_per_s=40).start()
    await asyncio.sleep(1.0)
    assert await _status(cp) == "ok"
    begin()
    # /healthz: 200, degraded, naming the store's problem, within seconds
    assert await until(lambda: cp.store_health.status().state == "unwritable", 8)
    health = await _health(cp, "/healthz")
    store = health.json()["detail"]["store"]
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert any(word in store["reason"] for word in fault_words), store["reason"]
    # a cold model loads and serves through the gateway; admin load/unload answer at once
    t0 = time.monotonic()
    with gateway_client(cp) as client:
        out = await asyncio.to_thread(client.infer, "cold", identity_input([[3.0]]))
    assert out.as_numpy("OUTPUT0").tolist() == [[3.0]]
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        loaded = await http.post("/models/spare/load")
        unloaded = await http.post("/models/spare/unload")
        events = await http.get("/models/spare")
    assert loaded.status_code == 200 and loaded.json()["state"] == "ready"
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "cold"
    assert events.status_code in (200, 503)  # the read may fail, cleanly
    if events.status_code == 503:
        assert "the store" in events.json()["error"]["message"]
    assert time.monotonic() - t0 < 15
    runs_in_fault = cp.loops.status("scheduler").runs
    await asyncio.sleep(2.0)
    assert cp.loops.status("scheduler").runs > runs_in_fault  # planning goes on meanwhile
    await asyncio.to_thread(load.stop)
    assert load.failed == 0, load.errors
    # Triton dies during the fault: its restore must not depend on the store
    assert cp.instance is not None and cp.instance.process is not None
    pid = cp.instance.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert await until(lambda: not cp.readiness.ready, 10)
    assert await until(lambda: cp.readiness.ready, 60)
    assert (await _health(cp, "/readyz")).status_code == 200
    assert cp.store_health.status().state != "ok"  # the fault was on throughout
    end()
    t_end = time.monotonic()
    assert await until(lambda: cp.store_health.status().state == "ok", 15)
    while (status := await _status(cp)) != "ok":  # a loop's next pass clears its failure
        assert time.monotonic() - t_end < 15, status
        await asyncio.sleep(0.2)
    last_ok = cp.loops.status("scheduler").last_ok
    assert last_ok is not None and await until(
        lambda: (cp.loops.status("scheduler").last_ok or last_ok) > last_ok, 5)
    assert time.monotonic() - t_end < 15
    # every record made during the fault is in the store now, none dropped
    assert cp.recorder is not None
    await cp.recorder.flush()
    assert await cp.database.writes.drain(30)
    assert cp.recorder.dropped == 0 and not cp.database.writes.dropped
    with cp.database.session() as session:
        served = session.scalar(select(func.count()).select_from(RequestRecord)
                                .where(RequestRecord.model == "pinned",
                                       RequestRecord.outcome == "OK"))
        events_of = {name: [(e.action, e.trigger, e.outcome) for e in session.scalars(
            select(LoadEvent).join(ModelRecord).where(ModelRecord.name == name)
            .order_by(LoadEvent.id))] for name in ("cold", "spare", "pinned")}
        states = dict(session.execute(select(ModelRecord.name, ModelRecord.state)).all())
    assert served == load.ok
    # (the scheduler may load "cold" again after Triton's restart: it had demand)
    assert events_of["cold"][0] == ("load", "gateway", "ok")
    assert all(outcome == "ok" for _, _, outcome in events_of["cold"])
    assert events_of["spare"] == [("load", "api", "ok"), ("unload", "api", "ok")]
    assert ("load", "restore", "ok") in events_of["pinned"]
    assert states["pinned"] == "ready" and states["spare"] == "cold"
    assert states["cold"] == cp.fleet.status("cold").state.value


async def test_a_full_data_disk_under_load(
        repo: Path, start_cp: StartControlPlane, disk_full: Path) -> None:
    for name in ("pinned", "cold", "spare"):
        add_identity(repo, name)
    cp = await start_cp(data_dir=disk_full, **SETTINGS)
    filler: list[Path] = []
    await _during_and_after(cp, lambda: filler.append(faultkit.fill(disk_full)),
                            lambda: filler[0].unlink(), "database or disk is full")


async def test_a_read_only_data_disk_under_load(
        repo: Path, start_cp: StartControlPlane, read_only: Path) -> None:
    for name in ("pinned", "cold", "spare"):
        add_identity(repo, name)
    cp = await start_cp(data_dir=read_only, **SETTINGS)
    await _during_and_after(cp, lambda: faultkit.read_only(read_only),
                            lambda: faultkit.writable(read_only), "disk I/O error",
                            "attempt to write a readonly database")
