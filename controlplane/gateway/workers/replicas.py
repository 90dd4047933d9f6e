"""The serving core's ``Replicas`` port in a gateway worker: the routing table pushed to it.

``route`` reads only the table (no round trip): the router's pick among the replicas it lists
for the model, or, for a later step of an open sequence, the replica its START went to while
that Triton still has the model ready (this worker's own sequence table: a client's sequence
travels on one connection, which the kernel gives to one worker). A miss asks the control
process for the model (:meth:`ControlLink.ensure`: one load however many workers ask), and
the table showing it ready arrives before the answer. Each instance gets the worker's own
channel and HTTP pool, opened afresh when its address changes or its Triton restarted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from controlplane.fleet.replicas import RETRIED
from controlplane.fleet.sequences import DEFAULT_IDLE_S, Sequences
from controlplane.gateway.workers.link import ControlLink
from controlplane.serving.facts import Sequence
from controlplane.serving.ports import Replica
from controlplane.serving.router import Router, route_step
from controlplane.serving.status import Status
from controlplane.serving.table import InstanceEntry, RoutingTable
from controlplane.serving.upstream import Upstream
from controlplane.serving.versions import VersionSplit

log = logging.getLogger(__name__)
#: an upstream replaced by a newer one is closed this long after (its in-flight calls finish)
_CLOSE_AFTER_S = 30.0


class TableReplica:
    """One instance as this worker's router sees it."""

    def __init__(self, entry: InstanceEntry, table: RoutingTable) -> None:
        self.entry = entry
        self.table = table
        self.upstream: Upstream | None = Upstream(entry.name, entry.url, entry.http_url)
        self.upstream.open()

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def outstanding(self) -> int:
        return 0 if self.upstream is None else self.upstream.outstanding

    @property
    def cordoned(self) -> bool:
        return self.entry.cordoned

    @property
    def live(self) -> bool:
        return self.entry.live

    def serves(self, model: str) -> bool:
        return self.entry.name in self.table.serving.get(model, ())

    def weight(self, model: str) -> float:
        return self.table.serving.get(model, {}).get(self.entry.name, 0.0)


class TableReplicas:
    def __init__(self, link: ControlLink) -> None:
        self.link = link
        self.table = RoutingTable(0)
        self._replicas: dict[str, TableReplica] = {}
        self._order: list[TableReplica] = []
        self.router = Router(lambda: self._order, sticky=self._stateful)
        self.sequences = Sequences(lambda m: self.table.stateful.get(m, DEFAULT_IDLE_S))
        self._closing: set[asyncio.Task[None]] = set()

    def _stateful(self, model: str) -> bool:
        return model in self.table.stateful

    def apply(self, table: RoutingTable) -> None:
        """Route by ``table`` from now on (an older one than the current is ignored)."""
        if table.version <= self.table.version:
            return
        replicas: dict[str, TableReplica] = {}
        for entry in table.instances:
            old = self._replicas.pop(entry.name, None)
            if old is not None and (old.entry.url, old.entry.http_url, old.entry.epoch) == \
                    (entry.url, entry.http_url, entry.epoch):
                old.entry, old.table = entry, table
                replicas[entry.name] = old
            else:
                if old is not None:
                    self._close_later(old)
                replicas[entry.name] = TableReplica(entry, table)
        for gone in self._replicas.values():
            self._close_later(gone)
        self._replicas, self.table = replicas, table
        self._order = list(replicas.values())

    def _close_later(self, replica: TableReplica) -> None:
        upstream, replica.upstream = replica.upstream, None
        if upstream is None:
            return

        async def close() -> None:
            await asyncio.sleep(_CLOSE_AFTER_S if upstream.outstanding else 0.0)
            await upstream.close()

        task = asyncio.create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def in_flight(self) -> dict[str, dict[str, int]]:
        """instance -> model -> requests in flight there from this worker (non-zero only)."""
        out: dict[str, dict[str, int]] = {}
        for replica in self._order:
            upstream = replica.upstream
            if upstream is not None and upstream.outstanding:
                out[replica.name] = {m: n for m, n in upstream.by_model.items() if n}
        return out

    # -- the Replicas port ----------------------------------------------------------------
    def route(self, model: str, exclude: Collection[str] = (),
              sequence: Sequence | None = None) -> TableReplica | None:
        if sequence is not None and model in self.table.stateful:
            return self._route_sequence(model, sequence, exclude)
        rt = self.router.pick(model)
        if rt is not None and rt.name in exclude:
            rest = [c for c in self.router.candidates(model) if c.name not in exclude]
            return min(rest, key=lambda c: c.outstanding, default=None)
        return rt

    def _route_sequence(self, model: str, sequence: Sequence,
                        exclude: Collection[str]) -> TableReplica | None:
        def holder(name: str) -> TableReplica | None:
            rt = self._replicas.get(name)
            return rt if (rt is not None and rt.live
                          and name in self.table.ready_live.get(model, ())) else None

        return route_step(self.router, self.sequences, model, sequence, exclude, holder)

    def ready_now(self, model: str) -> bool:
        return bool(self.table.serving.get(model))

    async def wait_ready(self, model: str, budget_s: float, exclude: Collection[str] = ()
                         ) -> None:
        await self.link.ensure(model, exclude, budget_s)

    def retry_on(self, replica: Replica, model: str, status: Status,
                 sequence: Sequence | None) -> bool:
        """As in the control process (``fleet/replicas.py``), by the table: a replica that
        answered NOT_FOUND or UNAVAILABLE and is no longer listed was being removed."""
        if status not in RETRIED or (sequence is not None and not sequence.start):
            return False
        return status is Status.UNAVAILABLE or not replica.serves(model)

    def failed(self, instance: str, model: str, status: Status, message: str) -> None:
        if status is not Status.CANCELLED:
            self.link.send(("failed", instance, model, status.value, message))

    def why_unavailable(self) -> str:
        return self.table.unavailable or "no Triton instance is serving"

    def split(self, model: str) -> VersionSplit | None:
        return self.table.splits.get(model)

    async def close(self) -> None:
        for replica in self._order:
            if replica.upstream is not None:
                await replica.upstream.close()
        for task in list(self._closing):
            task.cancel()
