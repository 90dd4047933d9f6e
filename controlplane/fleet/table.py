"""The fleet as a routing table (``serving/table.py``), for the gateway's worker processes.

Built from the runtimes' state with dict scans only (no statuses, no store): the supervisor
of the workers (``gateway/workers/supervisor.py``) builds one whenever a model changes state
and every ``PUBLISH_S`` otherwise, and pushes it only when it differs from the last.
"""

from __future__ import annotations

from controlplane.fleet.fleet import Fleet
from controlplane.serving.table import InstanceEntry, RoutingTable


def routing_table(fleet: Fleet, version: int) -> RoutingTable:
    instances = []
    serving: dict[str, dict[str, float]] = {}
    ready_live: dict[str, set[str]] = {}
    stateful: dict[str, float] = {}
    for rt in fleet.order:
        instance = rt.instance
        if instance is None or rt.manager is None:
            continue
        instances.append(InstanceEntry(rt.name, instance.grpc_url, instance.http_url,
                                       rt.live, rt.routable, rt.cordoned, rt.epoch))
        if not rt.live:
            continue
        for model in rt.manager.ready_names():
            ready_live.setdefault(model, set()).add(rt.name)
            if rt.serves(model) and (weight := rt.weight(model)) > 0:
                serving.setdefault(model, {})[rt.name] = weight
            if model not in stateful and fleet.stateful(model):
                stateful[model] = fleet.traits.sequence_idle_s(model)
    return RoutingTable(
        version, tuple(instances), serving,
        {model: frozenset(names) for model, names in ready_live.items()}, stateful,
        fleet.down_reason(), fleet.why_unavailable(), dict(fleet.splits))
