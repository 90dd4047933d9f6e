"""A fleet of embedded tritonservers under one control plane: replicas, one load per cold
model, failover when a Triton dies under load, draining (issue 10). Every Triton is real."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpc_aio
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.config import InstanceSettings
from controlplane.fleet.drain import drain
from controlplane.lifecycle.states import ModelState
from tests.integration.conftest import StartControlPlane
from tests.support.gateway import identity_input
from tests.support.repository import add_identity
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(240)


def _instances(*names: str) -> dict[str, InstanceSettings]:
    return {name: InstanceSettings() for name in names}


def _ready_on(cp: ControlPlane, model: str) -> list[str]:
    return sorted(s.instance for s in cp.fleet.replicas(model) if s.state is ModelState.READY)


async def _executions(cp: ControlPlane, instance: str, model: str) -> int:
    """Inferences Triton instance ``instance`` itself executed for ``model``."""
    rt = cp.fleet.runtimes[instance]
    assert rt.instance is not None
    stats = await rt.instance.client.statistics(model)
    return sum(int(v.get("inference_count", 0)) for v in stats.get("model_stats", []))


async def _infer(client: grpc_aio.InferenceServerClient, model: str, value: float,
                 timeout_s: float = 30) -> float:
    result = await client.infer(model, identity_input([[value]]), client_timeout=timeout_s)
    out = result.as_numpy("OUTPUT0")
    assert out is not None
    return float(out[0][0])


async def test_a_hot_model_gets_replicas_and_traffic_reaches_both(
        start_cp: StartControlPlane, repo: Path) -> None:
    add_identity(repo, "hot")
    add_identity(repo, "rare")
    cp = await start_cp(instances=_instances("a", "b"),
                        # one request a second already needs a second replica; no
                        # ramp: the new replica takes its equal share at once
                        # (test_autoscaler.py shows the ramp)
                        fleet={"replica_rate_per_s": 1e-4, "ramp_s": 0},
                        scheduler={"interval_s": 3600},  # ticks only when the test says
                        traffic={"flush_interval_s": 0.1})
    assert cp.gateway_url is not None and cp.scheduler is not None and cp.recorder is not None
    async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
        for i in range(30):
            assert await _infer(client, "hot", float(i)) == float(i)
        await _infer(client, "rare", 1.0)
        await cp.recorder.flush()
        await cp.scheduler.tick()  # the policy's decisions -> the replica plan
        assert cp.fleet.plan.instances_of("hot") and len(cp.fleet.plan.instances_of("hot")) == 2
        assert await until(lambda: _ready_on(cp, "hot") == ["a", "b"], 30), \
            cp.fleet.replicas("hot")
        # recorded once the replica's load has returned (its record written), a moment
        # after the replica turned ready
        assert await until(lambda: any(
            a.kind == "add replica" and a.model == "hot" and a.outcome == "ok"
            for a in cp.fleet.actions), 10), list(cp.fleet.actions)
        # its first load was the first request's, on one instance; the second the plan's
        triggers = sorted(e.trigger for rt in cp.fleet.order if rt.manager is not None
                          for e in rt.manager.store.events("hot") if e.action == "load")
        assert triggers == ["gateway", "replica"], triggers
        before = {i: await _executions(cp, i, "hot") for i in ("a", "b")}
        # 40 concurrent requests: power of two choices spreads them over both replicas
        values = await asyncio.gather(*(_infer(client, "hot", float(i)) for i in range(40)))
        assert values == [float(i) for i in range(40)]
        after = {i: await _executions(cp, i, "hot") for i in ("a", "b")}
    served = {i: after[i] - before[i] for i in ("a", "b")}
    assert sum(served.values()) == 40 and min(served.values()) > 0, served
    sent = {name: rt.upstream.requests for name, rt in cp.fleet.runtimes.items()
            if rt.upstream is not None}  # what /metrics shows as warmctl_instance_requests
    assert sum(sent.values()) == 71 and min(sent.values()) >= served["b"], sent
    # the plan is data: each replica says why
    assert all("replica" in r.why for r in cp.fleet.plan.replicas["hot"]), cp.fleet.plan


async def test_twenty_concurrent_first_requests_cause_one_load_on_one_instance(
        start_cp: StartControlPlane, repo: Path, tmp_path: Path) -> None:
    init_log = tmp_path / "cold.inits"
    add_identity(repo, "cold", init_log=str(init_log), init_sleep_s="1.0")
    cp = await start_cp(instances=_instances("a", "b", "c"), scheduler={"enabled": False})
    assert cp.gateway_url is not None
    async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
        values = await asyncio.gather(*(_infer(client, "cold", float(i)) for i in range(20)))
    assert values == [float(i) for i in range(20)]
    assert len(init_log.read_text().splitlines()) == 1  # Triton initialized it once
    assert len(_ready_on(cp, "cold")) == 1
    loads = [s for s in cp.fleet.replicas("cold") if s.state is not ModelState.COLD]
    assert len(loads) == 1, loads


async def test_a_drain_moves_needed_models_first_and_lets_in_flight_requests_finish(
        start_cp: StartControlPlane, repo: Path) -> None:
    # every execution sleeps 1.5 s: requests are surely in flight when the drain begins
    add_identity(repo, "slow", slow_executions="1000", slow_ms="1500")
    cp = await start_cp(instances=_instances("a", "b"), scheduler={"enabled": False})
    await cp.fleet.load("slow", trigger="api", instance="b")
    assert _ready_on(cp, "slow") == ["b"]
    assert cp.gateway_url is not None
    async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
        in_flight = [asyncio.create_task(_infer(client, "slow", float(i))) for i in range(2)]
        assert await until(lambda: cp.fleet.runtimes["b"].outstanding == 2, 5)
        report = await drain(cp.fleet, "b")
        assert [await t for t in in_flight] == [0.0, 1.0]  # finished on b, not cut off
        assert report.moved == {"slow": "a"}, report
        assert report.unloaded == ["slow"] and report.in_flight_left == 0, report
        assert _ready_on(cp, "slow") == ["a"]
        assert not cp.fleet.runtimes["b"].routable
        # the order: the model was ready on a before b let it go
        b_store = cp.fleet.runtimes["b"].manager
        a_store = cp.fleet.runtimes["a"].manager
        assert a_store is not None and b_store is not None
        a_load = next(e for e in a_store.store.events("slow", limit=5) if e.action == "load")
        b_unload = next(e for e in b_store.store.events("slow", limit=5) if e.action == "unload")
        assert a_load.finished_at is not None and b_unload.started_at >= a_load.finished_at
        # new requests go to a while b is drained
        assert await _infer(client, "slow", 7.0) == 7.0
    assert cp.fleet.runtimes["b"].outstanding == 0


async def test_killing_one_triton_under_load_loses_nothing_beyond_in_flight(
        start_cp: StartControlPlane, repo: Path) -> None:
    add_identity(repo, "hot")
    add_identity(repo, "solo")
    cp = await start_cp(instances=_instances("a", "b", "c"), scheduler={"enabled": False},
                        models={"hot": {"pinned": True}}, fleet={"pinned_replicas": 2},
                        triton={"supervision": {"restart_delay_s": 5.0}})
    hot_on = _ready_on(cp, "hot")
    assert len(hot_on) == 2, cp.fleet.replicas("hot")
    victim = hot_on[1]
    await cp.fleet.load("solo", trigger="api", instance=victim)
    assert _ready_on(cp, "solo") == [victim]
    assert cp.gateway_url is not None
    results: list[tuple[str, float, float, str | None]] = []  # (model, sent, done, error)
    stop = asyncio.Event()

    async def client_loop(model: str) -> None:
        async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:  # type: ignore[arg-type]
            i = 0
            while not stop.is_set():
                sent = time.monotonic()
                error = None
                try:
                    assert await _infer(client, model, float(i), timeout_s=20) == float(i)
                except InferenceServerException as exc:
                    error = str(exc.status())
                results.append((model, sent, time.monotonic(), error))
                i += 1

    loops = [asyncio.create_task(client_loop(m)) for m in ("hot", "hot", "solo")]
    await asyncio.sleep(2.0)
    process = cp.fleet.runtimes[victim].instance.process  # type: ignore[union-attr]
    assert process is not None and process.pid is not None
    killed_at = time.monotonic()
    os.kill(process.pid, signal.SIGKILL)
    await asyncio.sleep(4.0)
    stop.set()
    await asyncio.gather(*loops)
    after = [r for r in results if r[1] > killed_at + 0.2]
    failed_after = [r for r in after if r[3] is not None]
    assert not failed_after, failed_after  # nothing lost but what was in flight at the kill
    hot_after = [r for r in after if r[0] == "hot"]
    assert hot_after and max(r[2] - r[1] for r in hot_after) < 1.0  # moved at once
    solo_ok = [r for r in results if r[0] == "solo" and r[3] is None and r[1] > killed_at]
    assert solo_ok, "solo was never served again"
    assert solo_ok[0][2] - killed_at < 10.0
    moved_to = [i for i in _ready_on(cp, "solo") if i != victim]
    assert moved_to, cp.fleet.replicas("solo")
    assert any(a.kind == "failover" and a.model == "solo" for a in cp.fleet.actions)
