"""Triton pods as the fleet's instances, and the workload scaled through its API.

``discover`` lists the pods matching ``[kubernetes] label_selector`` in ``namespace``;
each one Running and Ready is an instance named after the pod (``kubernetes_pods.py``),
attached to as a static Triton is (``provider.attach``). ``watch`` follows them: it lists,
then watches from the list's resourceVersion (a chunked stream of JSON lines), renews the
watch from the last version seen when the server ends it (``watch_timeout_s``), re-lists
on ``410 Gone`` (the version fell out of the server's window) and reconnects after any
error with a bounded, doubling back-off; it ends only when cancelled. Each re-list yields
only what changed meanwhile, so no join or leave is lost or repeated.

The autoscaler scales the workload through its ``scale`` subresource (:meth:`scale_to`,
:meth:`replicas`) and first marks the pod it drained with
``controller.kubernetes.io/pod-deletion-cost`` (:meth:`mark_for_removal`), so that the
ReplicaSet deletes that pod rather than a busy one.

Client: ``kubernetes_asyncio``, the official client's asyncio port (generated from the same
OpenAPI spec, kept in step with Kubernetes releases), on this process's event loop over
aiohttp, which warmctl already uses: a watch is one more coroutine, where the synchronous
``kubernetes`` client would hold a thread per watch and per call. It brings kubeconfig and
in-cluster config (token refresh, TLS, auth plugins). Its ``Watch`` helper retries a 410
once by itself and reconnects silently, so the stream is read here, as JSON (its stubs
type calls as returning models: with ``_preload_content=False`` they answer the aiohttp
response, hence :func:`_raw`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from controlplane.config import InstanceSettings, Settings
from controlplane.errors import InstanceNotFound, TritonUnavailable
from controlplane.fleet.kubernetes_pods import Change, PodSet
from controlplane.fleet.provider import Joined, Left, attach
from controlplane.triton.instance import TritonInstance
from controlplane.types import InstanceName

log = logging.getLogger(__name__)

#: the annotation a ReplicaSet reads to choose which pod to delete on scale-in (lower first)
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
MERGE_PATCH = "application/merge-patch+json"
#: a watch that ends this soon (seconds) without a single line counts as a failure
EARLY_END_S = 1.0
#: what a list, watch or patch raises when the API server cannot answer as asked (refused,
#: timed out, an error status, a malformed answer, no usable config)
API_ERRORS = (ApiException, aiohttp.ClientError, TimeoutError, OSError,
              k8s_config.ConfigException, ValueError)


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class KubernetesProvider:
    """Instances from Triton pods (``[kubernetes]``); see the module docstring."""

    kind = "kubernetes"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.options = settings.kubernetes
        self.pods = PodSet(self.options)
        #: where the next watch starts (None: list first)
        self.resource_version: str | None = None
        #: re-lists after 410 and reconnects after errors, for views and tests
        self.relists = 0
        self.reconnects = 0
        self._api: k8s.ApiClient | None = None

    # -- the client -----------------------------------------------------------------------
    async def _client(self) -> k8s.ApiClient:
        if self._api is None:
            conf = k8s.Configuration()
            path = self.options.kubeconfig
            if path is not None:
                await k8s_config.load_kube_config(
                    config_file=str(path), client_configuration=conf, persist_config=False)
            else:
                k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=conf)
            self._api = k8s.ApiClient(conf)
        return self._api

    async def close(self) -> None:
        """Close the client's connections (a later call opens them again)."""
        api, self._api = self._api, None
        if api is not None:
            await api.close()

    async def _call(self, what: str, call: Awaitable[aiohttp.ClientResponse]
                    ) -> dict[str, Any]:
        """Await one API call (made with ``_preload_content=False``) and its JSON body within
        ``request_timeout_s``; raises ApiException for a non-2xx answer."""
        async with asyncio.timeout(self.options.request_timeout_s):
            response = await call
            try:
                body = await response.read()
                if not 200 <= response.status < 300:
                    raise ApiException(status=response.status,
                                       reason=f"{what}: {body[:300].decode(errors='replace')}")
                data = json.loads(body)
            finally:
                response.release()
        if not isinstance(data, dict):
            raise ApiException(status=0, reason=f"{what}: not a JSON object")
        return data

    # -- the Provider protocol ------------------------------------------------------------
    async def discover(self) -> dict[InstanceName, InstanceSettings]:
        """The ready pods now; raises TritonUnavailable when the API server cannot answer
        (unreachable, refused, a bad kubeconfig, no in-cluster config)."""
        try:
            await self._relist()
        except API_ERRORS as exc:
            raise TritonUnavailable(f"Kubernetes pods ({self.options.label_selector} in "
                                    f"{self.options.namespace}): {_why(exc)}") from exc
        return {name: self.settings.with_defaults(spec)
                for name, spec in self.pods.ready.items()}

    async def watch(self) -> AsyncIterator[Joined | Left]:
        """The pods' joins and leaves after :meth:`discover`, until cancelled."""
        o = self.options
        delay = o.reconnect_initial_s
        try:
            while True:
                try:
                    if self.resource_version is None:
                        for change in await self._relist():
                            yield self._defaults(change)
                    async for change in self._watch_once():
                        delay = o.reconnect_initial_s  # the stream answered
                        yield self._defaults(change)
                except Gone:
                    self.relists += 1
                    log.info("kubernetes: watch expired (410), listing the pods again")
                    self.resource_version = None
                except API_ERRORS as exc:
                    self.reconnects += 1
                    log.warning("kubernetes: pod watch failed (%s); again in %.1fs",
                                _why(exc), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, o.reconnect_max_s)
        finally:
            await self.close()

    async def open(self, name: InstanceName, spec: InstanceSettings) -> TritonInstance:
        return await attach(name, spec, self.settings.triton)

    def files(self, name: InstanceName) -> Path:
        return self.settings.data_dir / "instances" / name

    def is_single(self, name: InstanceName) -> bool:
        return False  # pods come and go: every one has its own loop names

    # -- listing and watching -------------------------------------------------------------
    async def _relist(self) -> list[Change]:
        o = self.options
        core = k8s.CoreV1Api(await self._client())
        listed = await self._call("list pods", _raw(core.list_namespaced_pod(
            o.namespace, label_selector=o.label_selector, _preload_content=False,
            _request_timeout=self.options.request_timeout_s)))
        changes = self.pods.relist(listed.get("items") or [])
        self.resource_version = str(listed.get("metadata", {}).get("resourceVersion") or "") \
            or None
        return changes

    async def _watch_once(self) -> AsyncIterator[Change]:
        """One watch call from ``resource_version``: its changes until the server ends it.
        Raises Gone (410), ApiException, aiohttp.ClientError, TimeoutError."""
        o = self.options
        core = k8s.CoreV1Api(await self._client())
        # the server ends the call after timeoutSeconds; the client's bound is a little later
        bound = aiohttp.ClientTimeout(total=o.watch_timeout_s + o.request_timeout_s,
                                      connect=o.request_timeout_s)
        async with asyncio.timeout(o.request_timeout_s):
            response = await _raw(core.list_namespaced_pod(
                o.namespace, label_selector=o.label_selector, watch=True,
                resource_version=self.resource_version or "", allow_watch_bookmarks=True,
                timeout_seconds=o.watch_timeout_s, _preload_content=False,
                _request_timeout=bound))
        try:
            if response.status == 410:
                raise Gone()
            if response.status != 200:
                body = (await response.read())[:300].decode(errors="replace")
                raise ApiException(status=response.status, reason=f"watch pods: {body}")
            began, lines, pending = time.monotonic(), 0, b""
            # split by hand: readline() refuses a line (a pod) longer than its 64 KiB buffer
            async for chunk in response.content.iter_any():
                *complete, pending = (pending + chunk).split(b"\n")
                for line in filter(bytes.strip, complete):
                    lines += 1
                    for change in self._event(json.loads(line)):
                        yield change
            if not lines and time.monotonic() - began < EARLY_END_S:
                # a watch the server ends at once, again and again, must not spin
                raise ApiException(status=0, reason="watch pods: ended at once, empty")
        finally:
            response.release()

    def _event(self, event: Any) -> list[Change]:
        """The changes one watch event makes; raises Gone, ApiException (an ERROR event),
        ValueError (not a watch event)."""
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise ValueError(f"watch pods: not a watch event: {str(event)[:200]}")
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiException(status=obj.get("code") or 0,
                               reason=f"watch pods: {obj.get('message', obj)}")
        version = obj.get("metadata", {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind in ("ADDED", "MODIFIED"):
            return self.pods.update(obj)
        if kind == "DELETED":
            return self.pods.delete(obj)
        return []  # BOOKMARK: the version only

    def _defaults(self, change: Change) -> Change:
        if isinstance(change, Joined):
            return Joined(change.name, self.settings.with_defaults(change.spec))
        return change

    # -- scaling (the autoscaler) ---------------------------------------------------------
    def _scale_path(self) -> str:
        o = self.options
        plural = "deployments" if o.workload_kind == "Deployment" else "statefulsets"
        return f"/apis/apps/v1/namespaces/{o.namespace}/{plural}/{o.workload_name}/scale"

    async def _request(self, method: str, path: str,
                       body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One GET or merge-patch of ``path``, its JSON answer (see :meth:`_call`)."""
        api = await self._client()
        headers = {"Accept": "application/json", "Content-Type": MERGE_PATCH}
        return await self._call(f"{method} {path}", _raw(api.call_api(
            path, method, header_params=headers, body=body, auth_settings=["BearerToken"],
            _preload_content=False, _request_timeout=self.options.request_timeout_s)))

    async def _scale(self, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
        return await self._request(method, self._scale_path(), body)

    async def replicas(self) -> int:
        """The workload's desired replicas (``spec.replicas`` of its Scale); raises
        ApiException, aiohttp.ClientError, TimeoutError."""
        scale = await self._scale("GET", None)
        return int(scale.get("spec", {}).get("replicas") or 0)

    async def scale_to(self, replicas: int) -> int:
        """Ask for ``replicas`` pods (a merge-patch of the Scale); returns the replicas the
        API server recorded. Raises ValueError (negative), ApiException, TimeoutError."""
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, not {replicas}")
        scale = await self._scale("PATCH", {"spec": {"replicas": replicas}})
        return int(scale.get("spec", {}).get("replicas") or 0)

    async def mark_for_removal(self, name: InstanceName, cost: int) -> None:
        """Annotate the pod of instance ``name`` with its deletion cost (lower: deleted
        first on scale-in; a Deployment's ReplicaSet reads it, a StatefulSet removes its
        highest ordinal regardless). Raises InstanceNotFound, ApiException, TimeoutError."""
        pod = self.pods.pods.get(name)
        if pod is None:
            raise InstanceNotFound(name, sorted(self.pods.pods))
        body = {"metadata": {"annotations": {DELETION_COST: str(cost)}}}
        await self._request("PATCH", f"/api/v1/namespaces/{self.options.namespace}/pods/{pod}",
                            body)


def _raw(call: Awaitable[Any]) -> Awaitable[aiohttp.ClientResponse]:
    """A call made with ``_preload_content=False``: it answers the raw response."""
    return cast("Awaitable[aiohttp.ClientResponse]", call)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

