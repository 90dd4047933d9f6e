"""A fake Kubernetes API server: the REST and watch protocol the Kubernetes provider uses.

No API server can run on these machines (no kind, k3s or etcd), so the provider is tested
against this one, at its protocol: an aiohttp server on a free loopback port that answers

- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=k=v`` with a PodList carrying
  ``metadata.resourceVersion``; with ``watch=true&resourceVersion=N`` a chunked stream of JSON
  lines ``{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK", "object": Pod}`` from after N,
  then live, until ``timeoutSeconds``; a version older than the kept window (:meth:`expire`)
  gets an ``ERROR`` event with a ``Status`` of code 410, as the real server sends;
- ``PATCH /api/v1/namespaces/{ns}/pods/{name}`` (merge patch: annotations);
- ``GET``/``PATCH /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets}/{name}/scale``
  (``autoscaling/v1`` Scale objects, merge patch).

Every request is recorded (method, path, query, content type, body). :meth:`stop` drops the
server and its open watches at once; :meth:`start` brings it back on the same port with the
same state, as an API server restart looks to a client.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 merge patch, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based selectors only (``app=triton,tier=gpu``)."""
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


class FakeKubernetes:
    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self.version = 1
        self.pods: dict[str, dict[str, Any]] = {}
        #: (resourceVersion, type, pod) for every change, oldest first
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        #: watches older than this get 410
        self.oldest = 0
        #: (plural, name) -> replicas
        self.scales: dict[tuple[str, str], int] = {("deployments", "triton"): 1}
        self.requests: list[Recorded] = []
        #: every call waits this long first (a hung API server)
        self.delay_s = 0.0
        self.port = 0
        self._watches: set[asyncio.Queue[tuple[int, str, dict[str, Any]] | None]] = set()
        self._runner: web.AppRunner | None = None

    # -- the server -----------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        ns = "/api/v1/namespaces/{ns}"
        app.router.add_get(ns + "/pods", self._pods)
        app.router.add_patch(ns + "/pods/{name}", self._patch_pod)
        scale = "/apis/apps/v1/namespaces/{ns}/{plural}/{name}/scale"
        app.router.add_get(scale, self._scale)
        app.router.add_patch(scale, self._scale)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """The API server goes away: open watches end, new connections are refused."""
        for queue in self._watches:
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig naming this server (plain HTTP, no credentials); JSON is YAML."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": self.namespace}}]}))
        return path

    # -- pods -----------------------------------------------------------------------------
    def add_pod(self, name: str, ip: str | None = None, *, ready: bool = False,
                labels: dict[str, str] | None = None, notify: bool = True) -> None:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": self.namespace,
                            "labels": labels or {"app": "triton"}, "annotations": {}},
               "status": {"phase": "Pending"}}
        self.pods[name] = pod
        self._set_status(pod, ip, ready)
        self._changed("ADDED", pod, notify)

    def set_ready(self, name: str, ready: bool, ip: str | None = None, *,
                  notify: bool = True) -> None:
        pod = self.pods[name]
        self._set_status(pod, ip or pod["status"].get("podIP"), ready)
        self._changed("MODIFIED", pod, notify)

    def delete_pod(self, name: str, *, notify: bool = True) -> None:
        self._changed("DELETED", self.pods.pop(name), notify)

    def expire(self) -> None:
        """Compact: every version up to now falls out of the window; open watches get 410."""
        self.oldest = self.version
        for queue in self._watches:
            queue.put_nowait((0, "EXPIRE", {}))

    @staticmethod
    def _set_status(pod: dict[str, Any], ip: str | None, ready: bool) -> None:
        status: dict[str, Any] = {"phase": "Running" if ip else "Pending"}
        if ip:
            status["podIP"] = ip
            status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                     **({} if ready else {"reason": "ContainersNotReady"})}]
        pod["status"] = status

    def _changed(self, kind: str, pod: dict[str, Any], notify: bool) -> None:
        self.version += 1
        pod["metadata"]["resourceVersion"] = str(self.version)
        event = (self.version, kind, copy.deepcopy(pod))
        self.history.append(event)
        if notify:
            for queue in self._watches:
                queue.put_nowait(event)

    # -- handlers -------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.requests.append(Recorded(request.method, request.path, dict(request.query),
                                      request.content_type, body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return body

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        selector = request.query.get("labelSelector", "")
        if request.query.get("watch", "").lower() in ("true", "1"):  # the client sends True
            return await self._watch(request, selector)
        items = [copy.deepcopy(p) for p in self.pods.values()
                 if _matches(p["metadata"]["labels"], selector)]
        return web.json_response({"apiVersion": "v1", "kind": "PodList", "items": items,
                                  "metadata": {"resourceVersion": str(self.version)}})

    async def _watch(self, request: web.Request, selector: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or self.version)
        timeout = float(request.query.get("timeoutSeconds", 1800))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        if since < self.oldest:
            await send("ERROR", _gone(since, self.oldest))
            return response
        queue: asyncio.Queue[tuple[int, str, dict[str, Any]] | None] = asyncio.Queue()
        for change in self.history:
            if change[0] > since:
                queue.put_nowait(change)
        self._watches.add(queue)
        event: tuple[int, str, dict[str, Any]] | None = (since, "", {})
        try:
            async with asyncio.timeout(timeout):
                while (event := await queue.get()) is not None:
                    version, kind, pod = event
                    if kind == "EXPIRE":
                        await send("ERROR", _gone(since, self.oldest))
                        break
                    if _matches(pod["metadata"]["labels"], selector):
                        await send(kind, pod)
                    since = version
        except (TimeoutError, ConnectionResetError):  # timeoutSeconds, or the client left
            pass
        finally:
            self._watches.discard(queue)
        if event is None and request.transport is not None:
            request.transport.close()  # the server goes away: the connection drops
        return response

    async def _patch_pod(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            return _status(404, "NotFound", f"pods \"{request.match_info['name']}\" not found")
        if request.content_type not in PATCH_TYPES:
            return _status(415, "UnsupportedMediaType", request.content_type)
        _merge(pod, body)
        self._changed("MODIFIED", pod, True)
        return web.json_response(pod)

    async def _scale(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        key = (request.match_info["plural"], request.match_info["name"])
        if key not in self.scales:
            return _status(404, "NotFound", f"{key[0]} \"{key[1]}\" not found")
        if request.method == "PATCH":
            if request.content_type not in PATCH_TYPES:
                return _status(415, "UnsupportedMediaType", request.content_type)
            self.scales[key] = int(body["spec"]["replicas"])
            self.version += 1
        replicas = self.scales[key]
        return web.json_response({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": key[1], "namespace": request.match_info["ns"],
                         "resourceVersion": str(self.version)},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas}})


def _gone(since: int, oldest: int) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
            "code": 410, "message": f"too old resource version: {since} ({oldest})"}


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": reason, "code": code, "message": message},
                             status=code)
