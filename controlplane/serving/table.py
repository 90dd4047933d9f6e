"""The routing table: what a gateway worker needs to route a request without asking anyone.

The control process owns the fleet; a worker process (``gateway/workers/``) sees it only as
this table, pushed to it whenever it changes (``fleet/table.py`` builds it): the instances
(addresses, whether they serve), each model's replicas that the router may pick now with
their weights, where a model is ready on a live Triton (an open sequence's later steps may
still go there while its instance drains), the stateful models with their sequence idle
limits, and why nothing serves when nothing does. Plain data: it crosses the process
boundary pickled, and a worker applies a newer one whole (``version`` orders them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controlplane.serving.versions import VersionSplit


@dataclass(frozen=True, slots=True)
class InstanceEntry:
    name: str
    #: gRPC ``host:port`` of its Triton, and ``http://host:port`` of its HTTP port (or None)
    url: str
    http_url: str | None
    #: its Triton serves (draining or not)
    live: bool
    #: serving and not draining: new requests may go there
    routable: bool
    #: no new loads or sequences (draining)
    cordoned: bool
    #: bumped each time its Triton restarted: channels are opened afresh (gRPC's reconnect
    #: back-off would fail calls for seconds)
    epoch: int = 0


@dataclass(frozen=True)
class RoutingTable:
    version: int
    instances: tuple[InstanceEntry, ...] = ()
    #: model -> {instance: weight} of the replicas the router may pick now
    serving: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: model -> instances where it is ready on a live Triton
    ready_live: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: stateful models -> their sequences' idle limit, seconds
    stateful: Mapping[str, float] = field(default_factory=dict)
    #: why no instance can serve at all (None while one can)
    down: str | None = None
    #: why a model has no ready replica, per instance (for errors)
    unavailable: str = ""
    #: model -> its version split during a rollout (``serving/versions.py``)
    splits: Mapping[str, VersionSplit] = field(default_factory=dict)

    def same_routes(self, other: RoutingTable | None) -> bool:
        """Everything but the version is equal (no push needed)."""
        return other is not None and (
            self.instances, self.serving, self.ready_live, self.stateful, self.down,
            self.unavailable, self.splits) == (
                other.instances, other.serving, other.ready_live, other.stateful, other.down,
                other.unavailable, other.splits)
