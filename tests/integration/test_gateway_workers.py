"""Gateway worker processes (``gateway.workers`` > 1) on shared ports: every worker serves,
one load for first requests spread over workers, a killed worker is replaced while the
others keep the port, every request recorded once by the control process. Real
tritonservers, real worker processes, clients on separate connections (the kernel spreads
connections, not requests, over the workers)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.config import Settings
from controlplane.store.database import Database
from controlplane.traffic.store import TrafficStore
from tests.integration.conftest import StartControlPlane
from tests.support.gateway import identity_input
from tests.support.repository import add_identity

pytestmark = pytest.mark.timeout(240)


def _infer(url: str, model: str, value: float) -> float:
    """One request on a connection of its own (gRPC shares connections between channels to
    one target unless told not to)."""
    with grpcclient.InferenceServerClient(
            url, channel_args=[("grpc.use_local_subchannel_pool", 1)]) as client:
        result = client.infer(model, identity_input([[value]]), client_timeout=60)
        return float(result.as_numpy("OUTPUT0")[0][0])


async def _clients(calls: list[Callable[[], Any]]) -> list[Any]:
    """Blocking client calls at once, on threads of their own: the control plane under test
    runs in this process, and its loads need the default executor's threads."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(await asyncio.gather(*(loop.run_in_executor(pool, call)
                                           for call in calls)))


def _health(cp: ControlPlane) -> dict[str, Any]:
    got = httpx.get(f"{cp.admin_url}/healthz", timeout=10)
    return dict(got.json())


async def test_workers_share_the_ports_and_one_load_serves_them_all(
        repo: Path, start_cp: StartControlPlane) -> None:
    add_identity(repo, "cold")
    cp = await start_cp(gateway={"workers": 2})
    assert cp.workers is not None and cp.gateway_url is not None and cp.manager is not None
    url = cp.gateway_url
    # 20 first requests for a cold model, each on its own connection, spread over workers
    values = await _clients([functools.partial(_infer, url, "cold", float(i))
                             for i in range(20)])
    assert values == [float(i) for i in range(20)]
    loads = [e for e in cp.manager.store.events("cold") if e.action == "load"]
    assert len(loads) == 1, loads
    # more connections: every worker served some
    await _clients([functools.partial(_infer, url, "cold", 1.0) for _ in range(20)])
    await asyncio.sleep(0.3)  # a report interval
    workers = (await asyncio.to_thread(_health, cp))["detail"]["gateway_workers"]
    assert workers["alive"] == 2 and all(w["served"] > 0 for w in workers["workers"]), workers
    assert sum(w["served"] for w in workers["workers"]) == 40
    # the server-wide calls are forwarded to the control process: its answers, its guard
    def server_wide() -> tuple[bool, int, str, str]:
        with grpcclient.InferenceServerClient(url) as client:
            ready = client.is_model_ready("cold")
            batch = client.get_model_config("cold").config.max_batch_size
            try:
                client.get_model_metadata("nope")
                unknown = "found"
            except InferenceServerException as exc:
                unknown = exc.message() or ""
            try:
                client.load_model("cold")
                refused = "allowed"
            except InferenceServerException as exc:
                refused = str(exc.status())
            return ready, batch, unknown, refused

    ready, batch, unknown, refused = await asyncio.to_thread(server_wide)
    assert ready and batch == 8
    assert "Request for unknown model: 'nope'" in unknown
    assert refused == "StatusCode.PERMISSION_DENIED"

    # the HTTP door through the workers too (tritonclient.http runs on gevent: one thread)
    assert cp.gateway_http_url is not None
    http_url = cp.gateway_http_url.removeprefix("http://")

    def over_http() -> tuple[list[float], bool]:
        client = httpclient.InferenceServerClient(http_url)
        try:
            x = np.array([[3.0, 4.0]], dtype=np.float32)
            inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            out = client.infer("cold", [inp]).as_numpy("OUTPUT0")
            return out.tolist()[0], client.is_model_ready("cold")
        finally:
            client.close()

    got, ready = await asyncio.to_thread(over_http)
    assert got == [3.0, 4.0] and ready


async def test_a_killed_worker_is_replaced_and_only_its_in_flight_requests_fail(
        repo: Path, start_cp: StartControlPlane) -> None:
    add_identity(repo, "ident")
    cp = await start_cp(gateway={"workers": 2})
    assert cp.workers is not None and cp.gateway_url is not None
    url = cp.gateway_url
    await asyncio.to_thread(_infer, url, "ident", 0.0)  # loaded
    stop = time.monotonic() + 6.0
    failures: list[str] = []
    ok = [0]

    def loop() -> None:
        # a fresh connection per request: some land on the worker about to be killed
        while time.monotonic() < stop:
            try:
                _infer(url, "ident", 1.0)
                ok[0] += 1
            except InferenceServerException as exc:
                failures.append(f"{exc.status()}: {exc.message()}")

    running = asyncio.ensure_future(_clients([loop] * 4))
    await asyncio.sleep(1.5)
    victim = cp.workers.workers[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    await running
    # at most the 4 requests the loops had in flight, and only those on the killed worker
    assert len(failures) <= 4, failures
    assert ok[0] > 20
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        workers = (await asyncio.to_thread(_health, cp))["detail"]["gateway_workers"]
        if workers["alive"] == 2:
            break
        await asyncio.sleep(0.2)
    assert workers["alive"] == 2 and workers["workers"][0]["restarts"] == 1, workers
    metrics = (await asyncio.to_thread(httpx.get, f"{cp.admin_url}/metrics", timeout=10)).text
    assert "warmctl_gateway_worker_restarts_total 1.0" in metrics
    assert 'warmctl_gateway_workers{state="alive"} 2.0' in metrics
    assert await asyncio.to_thread(_infer, url, "ident", 5.0) == 5.0


async def test_every_request_through_the_workers_is_recorded_once(
        repo: Path, make_settings: Callable[..., Settings]) -> None:
    add_identity(repo, "ident")
    settings = make_settings(gateway={"port": 0, "workers": 3},
                             traffic={"flush_interval_s": 3600})
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    try:
        assert cp.gateway_url is not None
        url = cp.gateway_url
        for start in range(0, 60, 10):
            await _clients([functools.partial(_infer, url, "ident", float(i))
                            for i in range(start, start + 10)])
    finally:
        await cp.stop()  # the workers' last reports, then the recorder's final flush
    database = Database(settings.db_url)
    try:
        usage = TrafficStore(database, "default").usage("ident", 0, time.time() + 60)
        assert sum(u.requests for u in usage) == 60
    finally:
        database.close()
