"""The fleet's own operations lose no request (issue 16): a drain under open sequences, trims,
drains and restarts under continuous load, shared memory across a Triton restart, a cold
load whose instance dies. Every Triton is a real tritonserver on loopback ports."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from multiprocessing import shared_memory
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpc_aio
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.config import InstanceSettings
from controlplane.fleet.drain import drain, restart, resume
from controlplane.fleet.removal import remove_replica
from controlplane.lifecycle.states import ModelState
from tests.integration.conftest import StartControlPlane
from tests.support.gateway import identity_input
from tests.support.kinds import add_model, add_sequence
from tests.support.repository import add_identity
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(300)

#: y = 2 x, for shared-memory requests
_DOUBLE = '''
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", 2 * pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
'''


def _instances(*names: str) -> dict[str, InstanceSettings]:
    return {name: InstanceSettings() for name in names}


def _ready_on(cp: ControlPlane, model: str) -> list[str]:
    return sorted(s.instance for s in cp.fleet.replicas(model) if s.state is ModelState.READY)


def _loads(cp: ControlPlane, model: str, trigger: str) -> int:
    return sum(1 for rt in cp.fleet.order if rt.manager is not None
               for e in rt.manager.store.events(model)
               if e.action == "load" and e.trigger == trigger)


def _tritonserver_pid(cp: ControlPlane, name: str) -> int:
    rt = cp.fleet.runtimes[name]
    assert rt.instance is not None and rt.instance.process is not None
    pid = rt.instance.process.pid
    assert pid is not None
    return pid


async def _step(client: grpc_aio.InferenceServerClient, seq: int, start: bool,
                end: bool) -> float | str:
    x = grpc_aio.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), np.float32))
    try:
        result = await client.infer("acc", [x], sequence_id=seq, sequence_start=start,
                                    sequence_end=end, client_timeout=60)
    except InferenceServerException as exc:
        return f"{exc.status()}: {exc.message()}"
    out = result.as_numpy("sum")
    assert out is not None
    return float(out[0, 0])


async def test_a_drain_under_open_sequences_completes_every_sequence(
        start_cp: StartControlPlane, repo: Path) -> None:
    add_sequence(repo, "acc")  # idle limit 5 s
    cp = await start_cp(instances=_instances("a", "b"), scheduler={"enabled": False},
                        fleet={"drain_timeout_s": 20})
    assert cp.gateway_url is not None
    async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
        assert await _step(client, 999, True, True) == 1.0  # its lazy load
        (holder,) = _ready_on(cp, "acc")
        other = "b" if holder == "a" else "a"
        open_seqs = [100, 101, 102, 103]
        sums = {s: [await _step(client, s, True, False), await _step(client, s, False, False)]
                for s in open_seqs}
        report = await asyncio.wait_for(drain(cp.fleet, holder), 30)
        # the model was made ready on the other instance first; the drain returned at once,
        # leaving acc where the four open sequences' state is
        assert report.moved == {"acc": other} and report.waited_s < 5
        assert report.sequences_left == 4 and list(report.lingering) == ["acc"]
        assert not cp.fleet.runtimes[holder].routable
        for s in open_seqs:
            sums[s].append(await _step(client, s, False, False))
        # a sequence that starts now goes to the other instance at once
        new = [await _step(client, 200, True, False), await _step(client, 200, False, True)]
        assert _ready_on(cp, "acc") == ["a", "b"]
        for s in open_seqs:
            sums[s].append(await _step(client, s, False, True))
        # every sequence ended: the drained instance's replica goes
        assert await until(lambda: _ready_on(cp, "acc") == [other], 10)
    assert sums == {s: [1.0, 2.0, 3.0, 4.0] for s in open_seqs}
    assert new == [1.0, 2.0]
    assert cp.fleet.sequences.open_on(holder) == 0


@pytest.mark.parametrize("workers", [1, 2])
async def test_trims_drains_and_restarts_under_load_fail_no_request(
        start_cp: StartControlPlane, repo: Path, workers: int) -> None:
    """Also with gateway worker processes: each routes by the table pushed to it, and a
    removal waits for what they have in flight once they route without the replica."""
    for model in ("hot", "solo"):
        add_identity(repo, model)
    cp = await start_cp(instances=_instances("a", "b"), scheduler={"enabled": False},
                        gateway={"workers": workers},
                        fleet={"drain_timeout_s": 10},
                        triton={"supervision": {"restart_delay_s": 0.2}})
    assert cp.gateway_url is not None
    await cp.fleet.load("hot", trigger="replica", instance="a")
    await cp.fleet.load("hot", trigger="replica", instance="b")
    await cp.fleet.load("solo", trigger="replica", instance="b")
    outcomes: list[tuple[float, str, str]] = []
    stop = asyncio.Event()

    async def client_loop(model: str, seed: int) -> None:
        # a connection per client (gRPC shares them by default): spread over the workers
        async with grpc_aio.InferenceServerClient(
                cp.gateway_url, channel_args=[("grpc.use_local_subchannel_pool", 1)]) as client:
            i = 0
            while not stop.is_set():
                i += 1
                value = float(seed * 100_000 + i)
                try:
                    result = await client.infer(model, identity_input([[value]]),
                                                client_timeout=30)
                    out = result.as_numpy("OUTPUT0")
                    ok = out is not None and float(out[0][0]) == value
                    outcomes.append((time.monotonic(), model, "ok" if ok else "wrong"))
                except InferenceServerException as exc:
                    outcomes.append((time.monotonic(), model, f"{exc.status()}: {exc.message()}"))
                await asyncio.sleep(0.01)

    loops = [asyncio.create_task(client_loop(m, n))
             for n, m in enumerate(("hot", "hot", "solo", "solo"))]
    try:
        await asyncio.sleep(1.0)
        b = cp.fleet.runtimes["b"]
        # a trim of hot's replica on b
        await remove_replica(cp.fleet, b, "hot", trigger="replica")
        assert _ready_on(cp, "hot") == ["a"]
        await asyncio.sleep(0.5)
        # a drain of b: solo is made ready on a before b stops taking requests
        report = await drain(cp.fleet, "b")
        assert report.moved == {"solo": "a"} and report.in_flight_left == 0
        resume(cp.fleet, "b")
        await cp.fleet.load("hot", trigger="replica", instance="b")
        await asyncio.sleep(0.5)
        # an operator's restart of a: its requests move to b first, solo is loaded there
        restarted = await restart(cp.fleet, "a")
        assert restarted is not None and restarted.moved == {
            "hot": "already ready elsewhere", "solo": "b"}
        assert await until(lambda: cp.fleet.runtimes["a"].routable, 30)
        await asyncio.sleep(1.0)
        kill_at = time.monotonic()
        os.kill(_tritonserver_pid(cp, "b"), signal.SIGKILL)  # a crash
        assert await until(lambda: cp.fleet.runtimes["b"].routable, 30)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    failed = [o for o in outcomes if o[2] != "ok"]
    before_kill = [o for o in failed if o[0] < kill_at]
    assert len(outcomes) > 200
    assert before_kill == [], before_kill[:5]
    # after the SIGKILL only requests in flight on the killed process may fail (4 clients);
    # the gateway retries those on the other replica, so usually none does
    assert len(failed) <= 4, failed[:5]
    # no request waited for a load because of the trim or the drain: only the scheduler-free
    # setup and the failover loaded anything
    assert _loads(cp, "hot", "gateway") == 0 and _loads(cp, "solo", "gateway") == 0


async def test_shared_memory_requests_succeed_across_a_triton_restart(
        start_cp: StartControlPlane, repo: Path) -> None:
    add_model(repo, "double", None, '''
        backend: "python"
        max_batch_size: 8
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
        instance_group [ { kind: KIND_CPU count: 1 } ]''')
    (repo / "double" / "1" / "model.py").write_text(_DOUBLE)
    cp = await start_cp(instances=_instances("a", "b"), scheduler={"enabled": False},
                        gateway={"allow_shared_memory": True},
                        models={"double": {"pinned": True}}, fleet={"pinned_replicas": 2},
                        triton={"supervision": {"restart_delay_s": 0.2}})
    assert cp.gateway_url is not None and _ready_on(cp, "double") == ["a", "b"]
    tag = f"wc{os.getpid()}"
    regions = [shared_memory.SharedMemory(name=f"{tag}_{io}", create=True, size=16)
               for io in ("in", "out")]
    try:
        np.ndarray((1, 4), np.float32, buffer=regions[0].buf)[:] = [[1, 2, 3, 4]]
        async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
            await client.register_system_shared_memory("in", "/" + regions[0].name, 16)
            await client.register_system_shared_memory("out", "/" + regions[1].name, 16)

            async def shm_infer() -> str:
                x = grpc_aio.InferInput("x", [1, 4], "FP32")
                x.set_shared_memory("in", 16)
                y = grpc_aio.InferRequestedOutput("y")
                y.set_shared_memory("out", 16)
                try:
                    await client.infer("double", [x], outputs=[y], client_timeout=30)
                except InferenceServerException as exc:
                    return f"{exc.status()}: {exc.message()}"
                got = np.ndarray((1, 4), np.float32, buffer=regions[1].buf).tolist()
                return "ok" if got == [[2, 4, 6, 8]] else f"wrong {got}"

            assert [await shm_infer() for _ in range(10)] == ["ok"] * 10
            a = cp.fleet.runtimes["a"]
            os.kill(_tritonserver_pid(cp, "a"), signal.SIGKILL)
            assert await until(lambda: not a.routable, 5)
            assert await until(lambda: a.routable and a.manager is not None
                               and a.manager.ready_now("double"), 60)
            after = [await shm_infer() for _ in range(40)]
            assert after == ["ok"] * 40, sorted(set(after))
            # every request still reaches both replicas, a's included
            async with httpx.AsyncClient(base_url=cp.admin_url) as http:
                registered = (await http.get("/fleet/shared-memory")).json()
            assert registered == [
                {"kind": "system", "name": n, "instances": ["a", "b"]} for n in ("in", "out")]
            status = await client.get_system_shared_memory_status(as_json=True)
            assert sorted(status["regions"]) == ["in", "out"]
            await client.unregister_system_shared_memory()
            assert cp.fleet.shared_memory.regions() == []
    finally:
        for region in regions:
            region.close()
            region.unlink()


async def test_waiters_for_a_cold_load_are_served_elsewhere_when_its_instance_dies(
        start_cp: StartControlPlane, repo: Path) -> None:
    add_identity(repo, "slow", init_sleep_s="2")
    cp = await start_cp(instances=_instances("a", "b", "c"), scheduler={"enabled": False},
                        triton={"supervision": {"restart_delay_s": 5}})
    assert cp.gateway_url is not None
    async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
        async def one(i: int) -> float | str:
            try:
                result = await client.infer("slow", identity_input([[float(i)]]),
                                            client_timeout=60)
            except InferenceServerException as exc:
                return f"{exc.status()}: {exc.message()}"
            out = result.as_numpy("OUTPUT0")
            return float(out[0][0]) if out is not None else "none"

        waiters = [asyncio.create_task(one(i)) for i in range(20)]

        def loading() -> list[str]:
            return [s.instance for s in cp.fleet.replicas("slow")
                    if s.state in (ModelState.LOADING, ModelState.WARMING)]

        assert await until(lambda: bool(loading()), 10)
        (loader,) = loading()
        os.kill(_tritonserver_pid(cp, loader), signal.SIGKILL)
        answers = await asyncio.gather(*waiters)
    assert answers == [float(i) for i in range(20)], answers
    assert loader not in _ready_on(cp, "slow") and len(_ready_on(cp, "slow")) == 1
