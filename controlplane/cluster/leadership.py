"""Leader election among control-plane replicas, by a lease in the shared store.

Every replica tries to take or renew the lease ``leader`` every third of ``lease_s``; the
one that holds it runs what must happen once in the fleet (the scheduler and its jobs, the
replica placer, the autoscaler, rollouts, pinned loads, failover and restores); the others
serve their gateway and the read API and send loads to the leader. A leader that cannot
renew (the store is unreachable) steps down before its lease can expire, so two replicas
never both act as leader; a follower takes over within ``lease_s`` of the leader's last
renewal, at once after a clean stop (the lease is released).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from controlplane.errors import ControlPlaneError
from controlplane.store.leases import Lease, LeaseStore

log = logging.getLogger(__name__)

LEADER = "leader"


class Leadership:
    def __init__(self, store: LeaseStore, replica: str, address: str, lease_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.replica = replica
        self.address = address
        self.lease_s = lease_s
        self.clock = clock
        self.is_leader = False
        #: the lease as last read (who leads, where, until when)
        self.lease: Lease | None = None
        self._renewed_at: float | None = None
        #: awaited in order when this replica becomes leader, and when it stops being one
        self.on_gain: list[Callable[[], Awaitable[object]]] = []
        self.on_lose: list[Callable[[], Awaitable[object]]] = []
        self.changes = 0

    @property
    def interval_s(self) -> float:
        return self.lease_s / 3

    @property
    def leader_address(self) -> str | None:
        """The leader's admin API; None when no lease was read yet."""
        return None if self.lease is None else self.lease.address

    async def step(self) -> None:
        """Take or renew the lease once; act on a change of role."""
        try:
            lease = await self.store.acquire(LEADER, self.replica, self.address, self.lease_s)
        except ControlPlaneError as exc:
            log.warning("leadership: %s", exc)
            # renewed too long ago: its lease may lapse before we could know; step down
            if self.is_leader and (self._renewed_at is None or self.clock() - self._renewed_at
                                   > self.lease_s * 2 / 3):
                await self._become(False, f"cannot renew the lease: {exc}")
            return
        self.lease = lease
        mine = lease.held_by(self.replica)
        if mine:
            self._renewed_at = self.clock()
        if mine != self.is_leader:
            await self._become(mine, f"lease epoch {lease.epoch}, held by {lease.holder}")

    async def _become(self, leader: bool, why: str) -> None:
        self.is_leader = leader
        self.changes += 1
        log.warning("replica %s is %s (%s)", self.replica,
                    "the leader" if leader else "a follower", why)
        for hook in self.on_gain if leader else self.on_lose:
            try:
                await hook()
            except Exception:  # one part failing to start or stop must not stop the others
                log.exception("leadership change hook failed")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.step()

    async def close(self) -> None:
        """A clean stop: give the lease up so that a follower leads at once."""
        if self.is_leader:
            try:
                await self.store.release(LEADER, self.replica)
            except ControlPlaneError as exc:
                log.warning("leadership: lease not released: %s", exc)
            self.is_leader = False

    def view(self) -> dict[str, object]:
        """For ``/healthz``: this replica, whether it leads, and who does."""
        lease = self.lease
        return {"replica": self.replica, "leader": self.is_leader,
                "leader_replica": None if lease is None else lease.holder,
                "leader_address": None if lease is None else lease.address,
                "lease_s": self.lease_s, "epoch": None if lease is None else lease.epoch}
