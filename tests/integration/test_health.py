"""Periodic health checks on two real embedded tritonservers (issue 20, item 5).

One Python-backend model, pinned with a replica on each instance. It breaks on ONE
instance only through a flag file named after that instance's tritonserver PID: the
model's Python stub is a child of its tritonserver, so ``os.getppid()`` in ``execute`` tells
the servers apart while both load the same repository (a file per PID, rather than per
instance name, because Triton tells a model nothing about the server it runs in). A flag
holding ``nan`` makes it answer NaN, anything else makes it raise. No client request goes
to the broken replica before it is out of routing: only the health probe can notice it.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as grpc_aio
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.config import InstanceSettings, Settings, load_settings
from controlplane.fleet.runtime import InstanceRuntime
from tests.conftest import ROOT
from tests.support.gateway import identity_input
from tests.support.repository import identity_config
from tests.support.waiting import until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

MODEL = "flaky"
INTERVAL_S = 1.0

_FLAKY = textwrap.dedent('''
    import json, os
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            config = json.loads(args["model_config"])
            self.flags = config["parameters"]["flag_dir"]["string_value"]

        def execute(self, requests):
            flag = os.path.join(self.flags, str(os.getppid()))
            mode = open(flag).read().strip() if os.path.exists(flag) else ""
            if mode and mode != "nan":
                raise pb_utils.TritonModelException("broken on purpose: " + mode)
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                y = np.full_like(x, np.nan) if mode == "nan" else x
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", y)]))
            return responses
''')


def _settings(tmp: Path) -> Settings:
    repo, flags = tmp / "repository", tmp / "flags"
    flags.mkdir(exist_ok=True)
    (repo / MODEL / "1").mkdir(parents=True, exist_ok=True)
    (repo / MODEL / "1" / "model.py").write_text(_FLAKY)
    (repo / MODEL / "config.pbtxt").write_text(identity_config(MODEL, flag_dir=str(flags)))
    return load_settings(
        data_dir=tmp / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0}, scheduler={"enabled": False},
        triton={"stop_timeout_s": 5, "load_timeout_s": 60},
        instances={"a": InstanceSettings(), "b": InstanceSettings()},
        fleet={"pinned_replicas": 2, "ramp_s": 0},
        health={"interval_s": INTERVAL_S, "reload_initial_s": 0.5, "reload_max_s": 2.0},
        models={MODEL: {"pinned": True}})


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("health")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cp(tmp: Path) -> AsyncIterator[ControlPlane]:
    control = ControlPlane(_settings(tmp))
    await control.start(wait_pinned=True)
    assert await until(lambda: all(rt.serves(MODEL) for rt in control.fleet.order), 60)
    yield control
    await control.stop()


def _flag(tmp: Path, rt: InstanceRuntime) -> Path:
    assert rt.instance is not None and rt.instance.process is not None
    return tmp / "flags" / str(rt.instance.process.pid)


async def _get(cp: ControlPlane, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        return await http.get(path)


async def _requests(cp: ControlPlane, n: int) -> list[str]:
    """``n`` requests through the gateway, one after another: each one's outcome."""
    outcomes = []
    async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
        for i in range(n):
            try:
                result = await client.infer(MODEL, identity_input([[float(i)]]),
                                            client_timeout=20)
                out = result.as_numpy("OUTPUT0")
                outcomes.append("ok" if out is not None and out[0][0] == i else f"wrong {out}")
            except InferenceServerException as exc:
                outcomes.append(f"{exc.status()}: {exc.message()}")
    return outcomes


def _requests_on(rt: InstanceRuntime) -> int:
    assert rt.upstream is not None
    return rt.upstream.requests


async def test_a_failing_replica_leaves_routing_and_comes_back(cp: ControlPlane,
                                                                tmp: Path) -> None:
    a, b = cp.fleet.runtime("a"), cp.fleet.runtime("b")
    served_a = _requests_on(a)
    flag = _flag(tmp, a)
    flag.write_text("raise")
    t0 = time.monotonic()
    assert await until(lambda: not a.serves(MODEL), 10)
    took = time.monotonic() - t0
    # two intervals, plus the loop's tick and one probe on a busy machine
    assert took <= 2 * INTERVAL_S + 1.0, took
    assert "broken on purpose" in a.unhealthy[MODEL]
    assert b.serves(MODEL) and MODEL not in b.unhealthy
    assert _requests_on(a) == served_a  # the probe found it, not a client

    detail = (await _get(cp, f"/models/{MODEL}")).json()
    replicas = {r["instance"]: r for r in detail["replicas"]}
    assert "broken on purpose" in replicas["a"]["unhealthy"]
    assert replicas["a"]["routable"] is False and replicas["b"]["unhealthy"] is None
    assert detail["unhealthy"].startswith("a: health probe failed")
    instance = (await _get(cp, "/instances/a")).json()
    assert "broken on purpose" in instance["unhealthy"][MODEL]
    metrics = (await _get(cp, "/metrics")).text
    assert f'warmctl_replica_unhealthy{{model="{MODEL}",triton_instance="a"}} 1.0' in metrics
    status = (await _get(cp, "/status")).json()
    [overview] = [m for m in status["models"] if m["name"] == MODEL]
    assert overview["unhealthy"].startswith("a: ")

    # meanwhile the other replica serves every request
    before_b = _requests_on(b)
    assert await _requests(cp, 20) == ["ok"] * 20
    assert _requests_on(b) - before_b == 20 and _requests_on(a) == served_a

    # reloaded with back-off while broken (and kept out of routing); back in routing once
    # its probe passes
    assert any(x.kind == "health" and x.outcome == "unhealthy" and x.instance == "a"
               for x in cp.fleet.actions)
    backoff = cp.parts.health.schedule.backoff
    assert await until(lambda: backoff[("a", MODEL)].failures >= 2, 20)
    assert not a.serves(MODEL) and "broken on purpose" in a.unhealthy[MODEL]
    flag.unlink()
    assert await until(lambda: a.serves(MODEL), 30), a.unhealthy
    assert any(x.kind == "health" and x.outcome == "recovered" and x.instance == "a"
               for x in cp.fleet.actions)
    assert a.manager is not None
    events = await a.manager.store.db.call(a.manager.store.events, MODEL, limit=20)
    assert any(e.action == "unload" and e.trigger == "replica" for e in events)
    assert await _requests(cp, 20) == ["ok"] * 20
    assert _requests_on(a) > served_a  # traffic reaches it again


async def test_a_model_whose_every_replica_is_unhealthy_answers_unavailable(
        cp: ControlPlane, tmp: Path) -> None:
    flags = [_flag(tmp, rt) for rt in cp.fleet.order]
    for flag in flags:
        flag.write_text("nan")
    try:
        assert await until(lambda: not any(rt.serves(MODEL) for rt in cp.fleet.order), 10)
        [outcome] = await _requests(cp, 1)
        assert outcome.startswith("StatusCode.UNAVAILABLE"), outcome
        assert "every replica is unhealthy" in outcome and "non-finite output" in outcome
    finally:
        for flag in flags:
            flag.unlink()
    assert await until(lambda: all(rt.serves(MODEL) for rt in cp.fleet.order), 30)
    assert await _requests(cp, 4) == ["ok"] * 4
