"""A control plane whose fleet is Kubernetes pods: a pod that turns Ready joins and serves;
a deleted pod is drained and retired.

No Kubernetes API server can run on these machines, so it is faked at its protocol
(``tests/support/fake_kubernetes.py``, reached through a kubeconfig); the "pod" is one real
tritonserver on loopback ports: its IP is 127.0.0.1 and ``[kubernetes]`` names its ports,
as a cluster's pods all listen on the same container ports at their own IPs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpc_aio

from controlplane.app import ControlPlane
from controlplane.config import load_settings
from controlplane.fleet.states import InstanceState
from controlplane.triton.process import TritonProcess
from tests.conftest import ROOT
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.gateway import identity_input
from tests.support.repository import add_identity
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes(namespace="serving")
    await server.start()
    yield server
    await server.stop()


async def test_a_ready_pod_joins_and_serves_and_a_deleted_one_is_retired(
        tmp_path: Path, repo: Path, triton: TritonProcess, fake: FakeKubernetes) -> None:
    add_identity(repo, "echo")
    settings = load_settings(
        data_dir=tmp_path / "state", model_repository=repo,
        backends_dir=ROOT / "triton_backends", admin={"port": 0},
        gateway={"port": 0, "http_port": 0}, scheduler={"enabled": False},
        triton={"load_timeout_s": 60}, fleet={"ramp_s": 0, "drain_timeout_s": 10},
        kubernetes={"enabled": True, "namespace": "serving",
                    "kubeconfig": fake.kubeconfig(tmp_path / "kubeconfig"),
                    "grpc_port": triton.grpc_port, "http_port": triton.http_port,
                    "metrics_port": triton.metrics_port, "reconnect_initial_s": 0.1})
    cp = ControlPlane(settings)
    await cp.start()
    try:
        assert cp.fleet.order == []  # no pod yet: no instance, and none made up
        fake.add_pod("triton-7c9-x2x7k", "127.0.0.1", ready=False)
        fake.set_ready("triton-7c9-x2x7k", True)
        assert await until(lambda: "triton-7c9-x2x7k" in cp.fleet.runtimes and cp.fleet.runtimes[
            "triton-7c9-x2x7k"].state is InstanceState.SERVING, within_s=60)
        rt = cp.fleet.runtimes["triton-7c9-x2x7k"]
        assert (rt.origin, rt.spec.provider, rt.spec.url) == (
            "kubernetes", "kubernetes", f"127.0.0.1:{triton.grpc_port}")

        async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
            result = await client.infer("echo", identity_input([[4.5]]), client_timeout=60)
        out = result.as_numpy("OUTPUT0")
        assert out is not None and float(out[0][0]) == 4.5
        assert rt.manager is not None and rt.manager.ready_now("echo")

        began = time.monotonic()
        fake.delete_pod("triton-7c9-x2x7k")
        assert await until(lambda: "triton-7c9-x2x7k" not in cp.fleet.runtimes, within_s=60)
        assert rt.phase is InstanceState.RETIRED
        assert "pod deleted" in rt.phase_reason
        assert any(name == "triton-7c9-x2x7k" for name, _, _ in cp.fleet.retired)
        # drained first: its model was unloaded from that Triton before it was let go
        assert not rt.manager.ready_now("echo")
        assert time.monotonic() - began < 60
    finally:
        await cp.stop()
