"""A supervised Triton and truthful readiness, against a real tritonserver.

Killed under load, frozen with SIGSTOP, a pinned model unloaded or failed, a model whose stub
died, a model whose initialize hangs, an external Triton that forgets a model.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.lifecycle.states import ModelState
from controlplane.triton.process import TritonProcess
from tests.integration.conftest import StartControlPlane
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import add_identity
from tests.support.waiting import until

FAST = {"supervision": {"probe_interval_s": 0.5, "probe_timeout_s": 0.5, "probe_misses": 2}}


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                found.append(int(proc.name))
    return found


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read()


async def _get(cp: ControlPlane, path: str, method: str = "GET", **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=120) as http:
        return await http.request(method, path, **kw)


async def _server_ready(cp: ControlPlane) -> bool:
    def ask() -> bool:
        with gateway_client(cp) as client:
            return bool(client.is_server_ready(client_timeout=2))

    return await asyncio.to_thread(ask)


async def _infer(cp: ControlPlane, model: str, timeout_s: float = 10) -> str:
    def call() -> str:
        with gateway_client(cp) as client:
            try:
                client.infer(model, identity_input([[1.0]]), client_timeout=timeout_s)
                return "ok"
            except InferenceServerException as exc:
                return f"{exc.status()}: {exc.message()}"

    return await asyncio.to_thread(call)


async def _wait(check: Any, timeout_s: float, step_s: float = 0.1) -> float:
    """Seconds until ``await check()`` is true; fails past ``timeout_s``."""
    t0 = time.monotonic()
    while not await check():
        assert time.monotonic() - t0 < timeout_s, f"not within {timeout_s}s"
        await asyncio.sleep(step_s)
    return time.monotonic() - t0


def _process(cp: ControlPlane) -> TritonProcess:
    assert cp.instance is not None and cp.instance.process is not None
    return cp.instance.process


async def test_triton_killed_under_load_is_noticed_restarted_and_its_models_restored(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "core")
    add_identity(repo, "other")
    cp = await start_cp(models={"core": {"pinned": True}}, scheduler={"enabled": False},
                        triton=FAST)
    assert await _infer(cp, "other") == "ok"
    assert (await _get(cp, "/readyz")).status_code == 200
    process = _process(cp)
    old_pid = process.pid
    assert old_pid is not None
    old_stubs = _children(old_pid)
    assert len(old_stubs) == 2

    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()

    def load(model: str) -> None:
        with gateway_client(cp) as client:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    client.infer(model, identity_input([[1.0]]), client_timeout=2)
                    outcome = "ok"
                except InferenceServerException as exc:
                    outcome = f"{exc.status()}: {exc.message()}"
                outcomes.append((time.monotonic() - t0, outcome))

    threads = [threading.Thread(target=load, args=(m,)) for m in ("core", "other") * 2]
    for thread in threads:
        thread.start()
    try:
        await asyncio.sleep(0.5)
        os.kill(old_pid, signal.SIGKILL)
        t_kill = time.monotonic()
        not_ready_after = await _wait(lambda: _not(_server_ready(cp)), 1.0, step_s=0.02)
        assert not_ready_after < 1.0
        readyz = await _get(cp, "/readyz")
        assert readyz.status_code == 503
        assert "SIGKILL" in " ".join(readyz.json()["detail"]["problems"])
        models = {m["name"]: m for m in (await _get(cp, "/models")).json()}
        assert models["core"]["state"] != "ready" and models["other"]["state"] != "ready"
        # reaped at once (no zombie) with its stubs
        assert not _running(old_pid) and not any(_running(p) for p in old_stubs)

        back = await _wait(lambda: _status_is(cp, "/readyz", 200), 30)
        assert process.pid != old_pid
        await _wait(lambda: _state_is(cp, "other", "ready"), 30)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    # no request hung past its 2 s deadline; those during the outage failed fast and clearly
    assert max(took for took, _ in outcomes) < 2.5
    failed = [o for _, o in outcomes if o != "ok"]
    assert failed and all("UNAVAILABLE" in o or "DEADLINE" in o for o in failed), failed[:5]
    assert any("Triton is" in o and "SIGKILL" in o for o in failed)
    assert await _infer(cp, "core") == "ok" and await _infer(cp, "other") == "ok"
    triton = (await _get(cp, "/triton")).json()
    assert triton["state"] == "live" and triton["restarts_in_window"] == 1
    assert "SIGKILL" in triton["last_exit"]
    assert triton["last_restore"]["core"] in ("ok", "ready")
    assert time.monotonic() - t_kill >= back


async def _not(value: Any) -> bool:
    return not await value


async def _status_is(cp: ControlPlane, path: str, code: int) -> bool:
    return (await _get(cp, path)).status_code == code


async def _state_is(cp: ControlPlane, model: str, state: str) -> bool:
    return bool((await _get(cp, f"/models/{model}")).json()["state"] == state)


async def test_a_frozen_triton_is_not_ready_within_seconds_and_back_without_a_restart(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "core")
    cp = await start_cp(models={"core": {"pinned": True}}, scheduler={"enabled": False},
                        triton=FAST)
    process = _process(cp)
    pid = process.pid
    assert pid is not None and await _infer(cp, "core") == "ok"
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        took: list[float] = []
        seen_not_ready = None
        http = httpx.AsyncClient(base_url=cp.admin_url, timeout=30)  # made once: no TLS setup
        while time.monotonic() - t0 < 10:
            for path in ("/healthz", "/readyz"):
                t_call = time.monotonic()
                response = await http.get(path)
                took.append(time.monotonic() - t_call)
                if path == "/readyz" and response.status_code == 503 and seen_not_ready is None:
                    seen_not_ready = time.monotonic() - t0
                    assert (await _get(cp, "/healthz")).status_code == 200  # not for a restart
            await asyncio.sleep(0.2)
        assert seen_not_ready is not None and seen_not_ready < 4.0
        await http.aclose()
        # from cached state (a call to the frozen Triton would take its timeout)
        assert max(took) < 0.5, sorted(took)[-5:]
        assert not await _server_ready(cp)
        health = (await _get(cp, "/healthz")).json()
        assert health["status"] == "degraded" and health["triton"] == "unresponsive"
        assert health["detail"]["loops"]["triton-supervisor"]["failing"]
        assert (await _infer(cp, "core", timeout_s=5)).startswith("StatusCode.UNAVAILABLE")
    finally:
        os.kill(pid, signal.SIGCONT)
    await _wait(lambda: _status_is(cp, "/readyz", 200), 10)
    assert process.pid == pid  # the same server: no restart was needed
    assert await _infer(cp, "core") == "ok"
    assert (await _get(cp, "/triton")).json()["restarts_in_window"] == 0


async def test_readiness_is_false_while_a_pinned_model_is_unloaded_or_failed_and_a_dead_stub_is_reloaded(  # noqa: E501
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "core")
    add_identity(repo, "other")
    cp = await start_cp(models={"core": {"pinned": True}}, scheduler={"enabled": False})
    assert await _infer(cp, "other") == "ok"
    # a model whose stub process dies: the next request fails, the model is reloaded
    pid = _process(cp).pid
    assert pid is not None
    stubs = {int(p) for p in _children(pid)}
    other_stub = next(p for p in stubs if b"/other/" in _cmdline(p))
    os.kill(other_stub, signal.SIGKILL)
    await asyncio.sleep(0.3)
    assert "Stub process" in await _infer(cp, "other")
    await _wait(lambda: _ok(cp, "other"), 20, step_s=0.5)

    async def reloaded() -> bool:
        event = (await _get(cp, "/models/other")).json()["events"][0]
        return (event["action"], event["trigger"], event["outcome"]) == (
            "reload", "recovery", "ok")

    await _wait(reloaded, 5)  # its record is finished just after it serves again
    assert (await _get(cp, "/models/other")).json()["state"] == "ready"
    assert other_stub not in _children(pid)

    # a pinned model force-unloaded by the operator
    assert (await _get(cp, "/readyz")).status_code == 200
    await _get(cp, "/models/core/unload", "POST", params={"force": "true"})
    readyz = await _get(cp, "/readyz")
    assert readyz.status_code == 503 and not await _server_ready(cp)
    assert "pinned model 'core' is cold" in " ".join(readyz.json()["detail"]["problems"])
    await asyncio.sleep(1.5)
    assert (await _get(cp, "/readyz")).status_code == 503  # nothing pretends it is back
    assert (await _get(cp, "/models/core/load", "POST")).status_code == 200
    assert (await _get(cp, "/readyz")).status_code == 200 and await _server_ready(cp)

    # a pinned model that fails to load
    (repo / "core" / "1" / "model.py").write_text("raise ImportError('weights missing')\n")
    await _get(cp, "/models/core/unload", "POST", params={"force": "true"})
    assert (await _get(cp, "/models/core/load", "POST")).status_code == 503
    readyz = await _get(cp, "/readyz")
    assert readyz.status_code == 503 and not await _server_ready(cp)
    assert "pinned model 'core' is failed" in " ".join(readyz.json()["detail"]["problems"])


async def _ok(cp: ControlPlane, model: str) -> bool:
    return await _infer(cp, model) == "ok"


async def test_a_hung_initialize_stays_failed_and_an_operator_restart_restores_the_rest(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "core")
    add_identity(repo, "other")
    add_identity(repo, "hangs", init_sleep_s="600")
    cp = await start_cp(models={"core": {"pinned": True}}, scheduler={"enabled": False},
                        triton={"load_timeout_s": 2})
    assert await _infer(cp, "other") == "ok"
    assert (await _get(cp, "/models/hangs/load", "POST")).status_code in (503, 504)
    assert (await _get(cp, "/models/hangs")).json()["state"] == "failed"
    assert "StatusCode.UNAVAILABLE" in await _infer(cp, "hangs", timeout_s=5)
    await _get(cp, "/models/hangs/unload", "POST")  # Triton is still in its initialize
    hangs = (await _get(cp, "/models/hangs")).json()
    assert hangs["state"] == "failed" and hangs["retry_at"] is not None
    old_pid = _process(cp).pid

    response = await _get(cp, "/triton/restart", "POST")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "live" and body["pid"] != old_pid
    assert body["last_restore"] == {"core": "ok", "other": "ok"}
    assert await _infer(cp, "other") == "ok" and await _infer(cp, "core") == "ok"
    hangs = (await _get(cp, "/models/hangs")).json()
    assert hangs["state"] == "failed" and hangs["retry_at"] is not None
    assert (await _get(cp, "/readyz")).status_code == 200


async def test_an_external_triton_that_forgets_a_model_is_noticed_on_the_first_error(
    repo: Path, start_cp: StartControlPlane, triton: TritonProcess
) -> None:
    add_identity(repo, "ident")
    cp = await start_cp(triton={"url": triton.grpc_url, "reconcile_interval_s": 3600},
                        scheduler={"enabled": False})
    assert await _infer(cp, "ident") == "ok"
    with grpcclient.InferenceServerClient(triton.grpc_url) as direct:
        direct.unload_model("ident")
        for _ in range(100):
            if not direct.is_model_ready("ident"):
                break
            await asyncio.sleep(0.05)
    first = await _infer(cp, "ident")
    assert first != "ok"
    took = await _wait(lambda: _ok(cp, "ident"), 10, step_s=0.2)
    assert took < 10
    events = (await _get(cp, "/models/ident")).json()["events"]
    # reloaded (by the recovery, or by a request that came first): without the check it
    # would stay "ready" here and fail every request until a reconcile
    assert events[0]["action"] == "load" and events[0]["outcome"] == "ok"
    assert events[0]["trigger"] in ("recovery", "gateway")
    with pytest.raises(httpx.HTTPStatusError):
        (await _get(cp, "/triton/restart", "POST")).raise_for_status()  # 409: external


_STUB_DIES = textwrap.dedent('''
    import os
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            os._exit(1)  # the stub process dies on every request
''')


async def test_a_model_whose_stub_keeps_dying_is_unloaded_within_the_timeout(
        repo: Path, start_cp: StartControlPlane) -> None:
    """Triton keeps a model whose stub died READY, and never finishes unloading it (it stays
    UNLOADING until the server restarts): the unload swaps a live stub in first."""
    (add_identity(repo, "dies") / "1" / "model.py").write_text(_STUB_DIES)
    cp = await start_cp(scheduler={"enabled": False}, triton={"unload_timeout_s": 20})
    assert cp.manager is not None and cp.instance is not None
    manager = cp.manager

    def given_up() -> bool:
        return "lost repeatedly" in (manager.status("dies").reason or "")

    with gateway_client(cp) as c:
        for _ in range(6):  # lost three times: automatic reloads back off
            with pytest.raises(InferenceServerException):
                await asyncio.to_thread(c.infer, "dies", identity_input([[1.0]]))
            if await until(given_up, 3):
                break
    status = cp.manager.status("dies")
    assert status.state is ModelState.FAILED and "lost repeatedly" in (status.reason or "")
    t0 = time.monotonic()
    await cp.fleet.unload("dies", trigger="api")
    assert time.monotonic() - t0 < 10
    assert cp.manager.state("dies") is ModelState.COLD
    entries = [e for e in await cp.instance.client.index() if e.name == "dies"]
    assert [e.state for e in entries] == ["UNAVAILABLE"]
