"""One replica of a replicated control plane: what it runs as the leader, and as a follower.

Every replica starts its instances (the same static or Kubernetes Tritons), its gateway and
its admin API, and observes the Tritons (each manager reconciles with Triton's index: a load
the leader made shows up here). Only the leader starts the scheduler and its jobs (the
replica placer runs from its decisions), resumes and runs rollouts, loads the pinned models,
restores, fails over and reloads unhealthy replicas; the fleet's own loops (replicas after
the measured load, the autoscaler, new version folders) skip their pass on a follower. A
follower asks the leader for a request's lazy load and answers other writes with 503 naming
the leader (``admin/app.py``'s guard); it mirrors the leader's rollout splits from the store.
Each replica keeps its own lifecycle records (its instances' store key carries the replica).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING

from controlplane.cluster.follower import Follower
from controlplane.cluster.leadership import Leadership
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.store.leases import LeaseStore
from controlplane.store.rollouts import RolloutStore

if TYPE_CHECKING:
    from controlplane.app import ControlPlane

log = logging.getLogger(__name__)

#: how often a follower mirrors the leader's rollout splits (s)
MIRROR_S = 1.0


def store_scope(replica: str) -> str:
    """The suffix of this replica's lifecycle store keys (instance names are up to 63
    characters and the key column 64: a short hash, not the replica's name)."""
    return "@" + hashlib.sha1(replica.encode()).hexdigest()[:8]


class ClusterRole:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        c = cp.settings.cluster
        self.leadership = Leadership(LeaseStore(cp.database), c.replica, "", c.lease_s)
        admin = cp.settings.admin.admin_token
        self.follower = Follower(cp.fleet, self.leadership, RolloutStore(cp.database),
                                 admin.get_secret_value() if admin else None,
                                 cp.settings.triton.load_timeout_s)
        fleet = cp.fleet
        fleet.leads = lambda: self.leadership.is_leader
        fleet.forward_load = self.follower.forward_load
        fleet.not_leader = self.follower.not_leader
        self.leadership.on_gain.append(self._lead)
        self.leadership.on_lose.append(self._follow)
        self._tasks: list[asyncio.Task[None]] = []

    def wire(self, rt: InstanceRuntime) -> None:
        """A manager restores only while this replica leads."""
        assert rt.manager is not None
        rt.manager.automatic = self.cp.fleet.leads

    async def start(self) -> None:
        """After the admin API listens (its address is what followers send writes to): take
        the lease or learn who holds it, then keep at it."""
        cp = self.cp
        self.leadership.address = cp.settings.cluster.advertise_url or cp.admin_url
        cp.readiness.pinned_done = True  # readiness follows the models, whoever loads them
        await self.leadership.step()
        self._tasks.append(asyncio.create_task(self.leadership.run(), name="leadership"))
        self._tasks.append(asyncio.create_task(cp.loops.every(
            "mirror-splits", MIRROR_S, self.follower.mirror_splits), name="mirror-splits"))

    async def _lead(self) -> None:
        cp = self.cp
        if cp.settings.scheduler.enabled and cp.scheduler is None:
            await cp.start_scheduler()
        await cp.rollouts.start()
        cp.readiness.pinned_done = False
        self._tasks.append(asyncio.create_task(cp._warm_pinned(), name="warm-pinned"))

    async def _follow(self) -> None:
        cp = self.cp
        if cp.jobs is not None:
            await cp.jobs.stop()
            cp.jobs = None
        if cp.scheduler is not None:
            await cp.scheduler.close()
            cp.scheduler = None
            cp.parts.scheduler = None
        await cp.rollouts.close()
        cp.readiness.pinned_done = True

    async def close(self) -> None:
        """First in a stop: the lease goes at once, so another replica leads now."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.leadership.close()

