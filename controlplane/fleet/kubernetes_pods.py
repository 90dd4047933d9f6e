"""Pods as instances, and the RBAC the provider needs: the pure half of the Kubernetes
provider (no I/O, no client).

A pod is an instance while it runs and is Ready: phase ``Running``, condition
``Ready=True``, an IP, and no ``deletionTimestamp`` (a terminating pod leaves at once, so its
drain uses the pod's grace period rather than starting after the kubelet's SIGTERM). Pods are
read as the API server sends them (JSON dicts, camelCase keys), from a list or a watch event.

:class:`PodSet` remembers which pods are instances now and turns a re-list or one watch
event into the :class:`Joined`/:class:`Left` changes since, each exactly once: a re-list
after ``410 Gone`` or a reconnect says only what changed meanwhile.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from controlplane.config import InstanceSettings, KubernetesSettings, valid_instance_name
from controlplane.fleet.provider import Joined, Left
from controlplane.types import InstanceName

Pod = Mapping[str, Any]
Change = Joined | Left

#: instance names are at most 63 characters; longer pod names keep a hash of the whole
_MAX_NAME = 63
_HASH = 8
_INVALID = re.compile(r"[^a-z0-9_-]")


def instance_name(pod_name: str) -> InstanceName:
    """The instance name of a pod: its name, lower-cased, ``.`` and other characters outside
    ``[a-z0-9_-]`` as ``-``; past 63 characters cut and suffixed with a hash of the full
    name (two long pod names sharing a prefix stay two instances). Raises ValueError for a
    name that cannot become one (empty, or not starting with a letter or digit)."""
    name = _INVALID.sub("-", pod_name.lower())
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(pod_name.encode(), usedforsecurity=False).hexdigest()[:_HASH]
        name = f"{name[:_MAX_NAME - _HASH - 1]}-{digest}"
    if not valid_instance_name(name):
        raise ValueError(f"pod name {pod_name[:80]!r} cannot be an instance name")
    return name


def pod_name(pod: Pod) -> str:
    return str(pod.get("metadata", {}).get("name", ""))


def not_ready(pod: Pod) -> str | None:
    """Why ``pod`` is not an instance (None: it is one)."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    if meta.get("deletionTimestamp"):
        return "pod terminating"
    phase = status.get("phase", "Unknown")
    if phase == "Failed":
        return f"pod failed: {status.get('reason') or status.get('message') or 'no reason'}"
    if phase != "Running":
        return f"pod {phase.lower()}"
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        why = (ready or {}).get("reason") or (ready or {}).get("message")
        return "pod not ready" + (f": {why}" if why else "")
    if not status.get("podIP"):
        return "pod has no IP"
    return None


def pod_settings(pod: Pod, options: KubernetesSettings) -> InstanceSettings:
    """The instance a ready pod is: Triton's ports (``[kubernetes]``) at its IP."""
    ip = str(pod["status"]["podIP"])
    host = f"[{ip}]" if ":" in ip else ip  # an IPv6 pod IP in a host:port address
    return InstanceSettings(
        provider="kubernetes", url=f"{host}:{options.grpc_port}",
        http_url=f"http://{host}:{options.http_port}",
        metrics_url=(f"http://{host}:{options.metrics_port}/metrics"
                     if options.metrics_port else None))


class PodSet:
    """The pods that are instances now, by instance name, and the changes each list or
    event makes to them."""

    def __init__(self, options: KubernetesSettings) -> None:
        self.options = options
        #: instance name -> its settings, for every ready pod
        self.ready: dict[InstanceName, InstanceSettings] = {}
        #: instance name -> pod name (the annotation goes to the pod)
        self.pods: dict[InstanceName, str] = {}

    def relist(self, pods: Iterable[Pod]) -> list[Change]:
        """The changes from what was known to ``pods`` (a full list): Left for each instance
        gone or no longer ready, Joined for each new one."""
        seen: dict[InstanceName, Pod] = {}
        for pod in pods:
            try:
                seen[instance_name(pod_name(pod))] = pod
            except ValueError:
                continue
        changes: list[Change] = []
        for name in [n for n in self.ready if n not in seen]:
            changes.extend(self._leave(name, "pod deleted"))
        for pod in seen.values():
            changes.extend(self.update(pod))
        return changes

    def update(self, pod: Pod) -> list[Change]:
        """The changes one added or modified pod makes."""
        try:
            name = instance_name(pod_name(pod))
        except ValueError:
            return []
        why = not_ready(pod)
        if why is not None:
            return self._leave(name, f"{why} ({pod_name(pod)})")
        spec = pod_settings(pod, self.options)
        known = self.ready.get(name)
        if known == spec:
            return []
        # a pod of the same name at another address (a StatefulSet's pod recreated while
        # the watch was away): the old instance leaves, the new one joins
        changes = self._leave(name, f"pod moved to {spec.url}") if known else []
        self.ready[name], self.pods[name] = spec, pod_name(pod)
        return [*changes, Joined(name, spec)]

    def delete(self, pod: Pod) -> list[Change]:
        """The change a deleted pod makes."""
        try:
            name = instance_name(pod_name(pod))
        except ValueError:
            return []
        return self._leave(name, f"pod deleted ({pod_name(pod)})")

    def _leave(self, name: InstanceName, why: str) -> list[Change]:
        if self.ready.pop(name, None) is None:
            return []
        self.pods.pop(name, None)
        return [Left(name, why)]


def rbac_rules(options: KubernetesSettings) -> list[dict[str, list[str]]]:
    """The RBAC rules of a Role that allows exactly the calls this provider makes:
    ``[{"apiGroups": [...], "resources": [...], "resourceNames": [...]?, "verbs": [...]}]``
    (deploy/kubernetes/rbac.yaml grants these)."""
    plural = "deployments" if options.workload_kind == "Deployment" else "statefulsets"
    return [
        # discover and watch (list with watch=true), the deletion-cost annotation
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch", "watch"]},
        # replicas() and scale_to(), on the one workload
        {"apiGroups": ["apps"], "resources": [f"{plural}/scale"],
         "resourceNames": [options.workload_name], "verbs": ["get", "patch"]},
    ]
