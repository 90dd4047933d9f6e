"""Where the fleet's Triton instances come from: started here, or found at an address.

A provider turns one ``[instances.<name>]`` entry into a running :class:`TritonInstance`.
``embedded`` starts a tritonserver of its own per instance (its own ports, log and backend
directory, optionally its own GPUs); ``static`` attaches to one someone else runs (compose,
VMs); ``kubernetes`` (``kubernetes.py``) lists Triton pods by label as named instances,
attached to as static ones are (:func:`attach`), and ``watch`` yields them as they come and
go (ModelMesh finds its pods the same way). The fleet's membership (``membership.py``)
starts what a provider discovers and follows what it watches.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controlplane.compile_cache.store import CompileCacheStore
from controlplane.config import InstanceSettings, Settings, TritonSettings
from controlplane.triton.client import TritonClient
from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.instance import TritonInstance
from controlplane.triton.metrics import PluginMetrics
from controlplane.triton.process import TritonProcess
from controlplane.types import InstanceName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Joined:
    """``watch()``: an instance appeared (a pod became ready, a VM registered)."""

    name: InstanceName
    spec: InstanceSettings


@dataclass(frozen=True)
class Left:
    """``watch()``: an instance went away on its own (a pod deleted, a VM gone)."""

    name: InstanceName
    why: str


class Provider(Protocol):
    """Finds and opens instances of one kind (``embedded``, ``static``; a Kubernetes
    provider is one more class of this shape)."""

    kind: str

    async def discover(self) -> dict[InstanceName, InstanceSettings]:
        """The instances this provider has now, by name (configured ones, or found: an API
        call for a discovering provider; raises TritonUnavailable when it cannot answer)."""

    def watch(self) -> AsyncIterator[Joined | Left]:
        """The changes after :meth:`discover`, as they happen; ends when there will be none
        (configured instances never change while warmctl runs)."""

    async def open(self, name: InstanceName, spec: InstanceSettings) -> TritonInstance:
        """Start or attach to ``name``; raises TritonStartError / TritonUnavailable."""

    def files(self, name: InstanceName) -> Path:
        """The instance's own folder (log, backend directory)."""

    def is_single(self, name: InstanceName) -> bool:
        """The one instance configured the old way (pre-fleet file and loop names)."""


class ConfiguredProvider:
    """The instances named in the settings, started (embedded) or attached to (static)."""

    def __init__(self, settings: Settings, kind: str) -> None:
        self.settings = settings
        self.kind = kind
        #: one instance configured the old way keeps the old file layout (data_dir/triton.log)
        self.single = not settings.instances

    async def discover(self) -> dict[InstanceName, InstanceSettings]:
        return {name: spec for name, spec in self.settings.fleet_instances().items()
                if spec.provider == self.kind}

    async def watch(self) -> AsyncIterator[Joined | Left]:
        """Settings do not change while warmctl runs: nothing after ``discover``."""
        return
        yield  # an async generator that ends at once

    def files(self, name: InstanceName) -> Path:
        """The instance's own folder: log and backend directory (two servers must not share
        a backend directory: a crashed one's stubs are found, and killed, by its path)."""
        data = self.settings.data_dir
        return data if self.is_single(name) else data / "instances" / name

    def is_single(self, name: InstanceName) -> bool:
        """The one instance configured the old way (no ``[instances]``): its files and loops
        keep the pre-fleet names; instances added at run time beside it get their own."""
        return self.single and name == self.settings.instance_name

    async def open(self, name: InstanceName, spec: InstanceSettings) -> TritonInstance:
        if spec.provider != "embedded":
            return await attach(name, spec, self.settings.triton)
        process = self._process(name, spec)
        await process.launch()
        return _instance(name, self.settings.triton, process.grpc_url, process.metrics_url,
                         process.http_url, process)

    def _process(self, name: InstanceName, spec: InstanceSettings) -> TritonProcess:
        s, t = self.settings, self.settings.triton
        folder = self.files(name)
        distribution = TritonDistribution.locate(t.binary)
        backend_dir = distribution.assemble_backend_dir(s.backends_dir, folder / "backends")
        compile_cache = CompileCacheStore.from_settings(s)
        env = compile_cache.environment() if compile_cache else {}
        if spec.cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices
        return TritonProcess(
            distribution=distribution, model_repository=s.model_repository,
            backend_dir=backend_dir, log_path=folder / "triton.log", host=t.host,
            grpc_port=spec.grpc_port, http_port=spec.http_port, metrics_port=spec.metrics_port,
            startup_timeout_s=t.startup_timeout_s, stop_timeout_s=t.stop_timeout_s,
            disable_auto_complete_config=t.disable_auto_complete_config,
            extra_args=t.extra_args, env=env)


async def attach(name: InstanceName, spec: InstanceSettings,
                 triton: TritonSettings) -> TritonInstance:
    """A Triton someone else runs, at ``spec.url`` (static, a Kubernetes pod), once it
    answers; raises TritonUnavailable when it does not within ``triton.startup_timeout_s``."""
    assert spec.url is not None  # InstanceSettings refuses a static/kubernetes one without
    instance = _instance(name, triton, spec.url, spec.metrics_url,
                         spec.http_url or default_http_url(spec.url), None)
    try:
        await instance.wait_live(triton.startup_timeout_s)
    except BaseException:
        await instance.client.close()
        raise
    return instance


def _instance(name: InstanceName, t: TritonSettings, url: str, metrics_url: str | None,
              http_url: str, process: TritonProcess | None) -> TritonInstance:
    client = TritonClient(url, call_timeout_s=t.call_timeout_s,
                          load_timeout_s=t.load_timeout_s,
                          unload_timeout_s=t.unload_timeout_s)
    return TritonInstance(name, client, PluginMetrics(metrics_url) if metrics_url else None,
                          process, http_url=http_url)


def default_http_url(grpc_url: str) -> str:
    """Triton's HTTP endpoint beside its gRPC one: same host, Triton's default port 8000."""
    host = grpc_url.split("://")[-1].rsplit(":", 1)[0]
    return f"http://{host}:8000"


#: the kinds of instance warmctl can open, by ``provider`` key
KINDS = ("embedded", "static")
