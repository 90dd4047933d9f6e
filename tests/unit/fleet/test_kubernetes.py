"""The Kubernetes provider against a fake API server.

No Kubernetes API server can run on these machines (no kind, k3s or etcd), so it is faked at
its protocol (``tests/support/fake_kubernetes.py``): the real REST paths, PodLists with
resourceVersions, chunked watch streams of JSON events with ``ERROR``/410, Scale objects and
merge patches. The provider reaches it through the official client and a kubeconfig file the
test writes, as it would a real cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.config import KubernetesSettings, Settings, load_settings
from controlplane.errors import InstanceNotFound, TritonUnavailable
from controlplane.fleet.kubernetes import DELETION_COST, KubernetesProvider
from controlplane.fleet.kubernetes_pods import instance_name, pod_settings, rbac_rules
from controlplane.fleet.provider import Joined, Left
from controlplane.fleet.providers import providers
from tests.support.fake_kubernetes import FakeKubernetes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes(namespace="serving")
    await server.start()
    yield server
    await server.stop()


def _settings(tmp_path: Path, fake: FakeKubernetes, **kubernetes: Any) -> Settings:
    return load_settings(data_dir=tmp_path / "state", kubernetes={
        "enabled": True, "namespace": "serving", "kubeconfig": fake.kubeconfig(
            tmp_path / "kubeconfig"), "request_timeout_s": 2, "watch_timeout_s": 30,
        "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, **kubernetes})


@pytest.fixture
async def provider(tmp_path: Path, fake: FakeKubernetes) -> AsyncIterator[KubernetesProvider]:
    p = KubernetesProvider(_settings(tmp_path, fake))
    yield p
    await p.close()


class Events:
    """The provider's watch, drained by a task of its own (as the membership follows it):
    waiting for an event with a timeout must not cancel the watch itself."""

    def __init__(self, provider: KubernetesProvider) -> None:
        self.queue: asyncio.Queue[Joined | Left] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump(provider))

    async def _pump(self, provider: KubernetesProvider) -> None:
        async for event in provider.watch():
            self.queue.put_nowait(event)

    async def next(self) -> Joined | Left:
        return await asyncio.wait_for(self.queue.get(), 10)

    async def nothing_more(self) -> None:
        await asyncio.sleep(0.3)
        assert self.queue.empty(), self.queue.get_nowait()
        assert not self.task.done()  # the watch never ends by itself

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_discover_lists_ready_pods_by_label(
        fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    fake.add_pod("triton-7d9f-a", "10.0.0.5", ready=True)
    fake.add_pod("triton-7d9f-b", "10.0.0.6", ready=False)
    fake.add_pod("triton-7d9f-c")  # pending: no IP yet
    fake.add_pod("other-0", "10.0.0.9", ready=True, labels={"app": "web"})
    found = await provider.discover()
    assert list(found) == ["triton-7d9f-a"]
    spec = found["triton-7d9f-a"]
    assert (spec.provider, spec.url, spec.http_url, spec.metrics_url) == (
        "kubernetes", "10.0.0.5:8001", "http://10.0.0.5:8000", "http://10.0.0.5:8002/metrics")
    listed = fake.requests[-1]
    assert (listed.path, listed.query["labelSelector"]) == ("/api/v1/namespaces/serving/pods",
                                                            "app=triton")
    assert provider.resource_version == str(fake.version)


async def test_pods_join_when_ready_and_leave_when_not_or_deleted(
        fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    assert await provider.discover() == {}
    events = Events(provider)
    try:
        fake.add_pod("triton-0")
        fake.set_ready("triton-0", False, "10.1.0.4")  # running, not ready: nothing yet
        fake.set_ready("triton-0", True)
        joined = await events.next()
        assert isinstance(joined, Joined) and joined.name == "triton-0"
        assert joined.spec.url == "10.1.0.4:8001"
        fake.set_ready("triton-0", False)
        left = await events.next()
        assert left == Left("triton-0", "pod not ready: ContainersNotReady (triton-0)")
        fake.set_ready("triton-0", True)
        assert isinstance(await events.next(), Joined)
        fake.delete_pod("triton-0")
        assert await events.next() == Left("triton-0", "pod deleted (triton-0)")
        await events.nothing_more()
        watch = fake.requests[-1].query
        assert watch["watch"].lower() == "true" and watch["labelSelector"] == "app=triton"
    finally:
        await events.close()


async def test_410_relists_without_losing_or_repeating_a_change(
        fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    fake.add_pod("keep", "10.0.0.1", ready=True)
    fake.add_pod("gone", "10.0.0.2", ready=True)
    assert set(await provider.discover()) == {"keep", "gone"}
    events = Events(provider)
    try:
        fake.add_pod("early", "10.0.0.3", ready=True)  # seen by the watch
        assert isinstance(await events.next(), Joined)
        # the watch falls behind: these changes are compacted away before it sees them
        fake.delete_pod("gone", notify=False)
        fake.add_pod("new", "10.0.0.4", ready=True, notify=False)
        fake.expire()
        got = [await events.next(), await events.next()]
        assert [(type(e).__name__, e.name) for e in got] == [("Left", "gone"),
                                                             ("Joined", "new")]
        assert got[0] == Left("gone", "pod deleted")
        assert provider.relists == 1
        await events.nothing_more()  # keep and early: neither left nor joined again
        fake.set_ready("keep", False)  # the new watch goes on from the re-list's version
        assert isinstance(await events.next(), Left)
        assert sorted(provider.pods.ready) == ["early", "new"]
    finally:
        await events.close()


async def test_the_api_server_going_away_and_back(
        fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    await provider.discover()
    events = Events(provider)
    try:
        fake.add_pod("a", "10.0.0.1", ready=True)
        assert isinstance(await events.next(), Joined)
        await fake.stop()
        fake.add_pod("b", "10.0.0.2", ready=True)  # while the watch cannot see it
        pending = asyncio.ensure_future(events.next())
        await asyncio.sleep(0.6)  # several refused reconnects, each back-off at most 0.2 s
        assert not pending.done()
        await fake.start()
        joined = await pending
        assert isinstance(joined, Joined) and joined.name == "b"
        assert provider.reconnects >= 2
        await events.nothing_more()
    finally:
        await events.close()


async def test_discover_fails_clearly_and_every_call_is_bounded(
        tmp_path: Path, fake: FakeKubernetes) -> None:
    fake.delay_s = 5  # a hung API server
    p = KubernetesProvider(_settings(tmp_path, fake, request_timeout_s=0.3))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TritonUnavailable, match="app=triton in serving"):
        await p.discover()
    assert loop.time() - began < 2
    with pytest.raises(TimeoutError):
        await p.scale_to(3)
    await p.close()
    await fake.stop()
    with pytest.raises(TritonUnavailable, match=r"ClientConnectorError|Connect"):
        await p.discover()
    await p.close()


async def test_scale_to_patches_the_scale_subresource(
        tmp_path: Path, fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    assert await provider.replicas() == 1
    assert await provider.scale_to(3) == 3
    patch = fake.requests[-1]
    assert (patch.method, patch.path, patch.content_type, patch.body) == (
        "PATCH", "/apis/apps/v1/namespaces/serving/deployments/triton/scale",
        "application/merge-patch+json", {"spec": {"replicas": 3}})
    assert await provider.replicas() == 3
    with pytest.raises(ValueError):
        await provider.scale_to(-1)
    fake.scales[("statefulsets", "tritons")] = 2
    sts = KubernetesProvider(_settings(tmp_path, fake, workload_kind="StatefulSet",
                                       workload_name="tritons"))
    try:
        assert await sts.scale_to(0) == 0
        assert fake.scales[("statefulsets", "tritons")] == 0
    finally:
        await sts.close()


async def test_mark_for_removal_annotates_the_pod(
        fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    fake.add_pod("triton.gpu-1", "10.0.0.7", ready=True)
    assert list(await provider.discover()) == ["triton-gpu-1"]
    await provider.mark_for_removal("triton-gpu-1", -5)
    patch = fake.requests[-1]
    assert (patch.path, patch.content_type) == ("/api/v1/namespaces/serving/pods/triton.gpu-1",
                                                "application/merge-patch+json")
    assert fake.pods["triton.gpu-1"]["metadata"]["annotations"] == {DELETION_COST: "-5"}
    with pytest.raises(InstanceNotFound):
        await provider.mark_for_removal("nope", 0)


def test_pod_names_become_instance_names() -> None:
    assert instance_name("triton-5f7c9d-x2x7k") == "triton-5f7c9d-x2x7k"
    assert instance_name("Triton.GPU_0") == "triton-gpu_0"
    long_a, long_b = "t" * 70 + "-a", "t" * 70 + "-b"
    assert len(instance_name(long_a)) == 63
    assert instance_name(long_a) != instance_name(long_b)
    with pytest.raises(ValueError):
        instance_name("-x")
    pod = {"metadata": {"name": "t"}, "status": {"podIP": "fd00::7"}}
    spec = pod_settings(pod, KubernetesSettings(metrics_port=0))
    assert (spec.url, spec.http_url, spec.metrics_url) == ("[fd00::7]:8001",
                                                            "http://[fd00::7]:8000", None)


async def test_enabled_kubernetes_is_a_provider_and_the_fleet_has_no_default_instance(
        tmp_path: Path, fake: FakeKubernetes) -> None:
    settings = _settings(tmp_path, fake)
    assert isinstance(providers(settings)["kubernetes"], KubernetesProvider)
    assert settings.fleet_instances() == {}
    assert "kubernetes" not in providers(load_settings(data_dir=tmp_path))


def _permission(call: Any) -> tuple[str, str, str]:
    """The RBAC (apiGroup, resource, verb) one recorded request needs."""
    parts = call.path.strip("/").split("/")
    if parts[0] == "api":  # /api/v1/namespaces/{ns}/pods[/{name}]
        group, rest = "", parts[4:]
    else:  # /apis/{group}/v1/namespaces/{ns}/{plural}/{name}/scale
        group, rest = parts[1], parts[5:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    verb = {"PATCH": "patch"}.get(call.method) or (
        "watch" if call.query.get("watch", "").lower() == "true" else
        "get" if len(rest) > 1 else "list")
    return group, resource, verb


async def test_the_calls_it_makes_are_exactly_its_rbac_rules(
        fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    fake.add_pod("triton-0", "10.0.0.1", ready=True)
    await provider.discover()
    events = Events(provider)
    try:
        fake.add_pod("triton-1", "10.0.0.2", ready=True)
        await events.next()
        await provider.replicas()
        await provider.scale_to(2)
        await provider.mark_for_removal("triton-1", 0)
    finally:
        await events.close()
    made = {_permission(call) for call in fake.requests}
    granted = {(group, resource, verb) for rule in rbac_rules(provider.options)
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert made == granted
    scale_rule = rbac_rules(provider.options)[1]
    assert scale_rule["resourceNames"] == ["triton"]
    assert {c.path.split("/")[-2] for c in fake.requests if "scale" in c.path} == {"triton"}
