"""What a follower replica does instead of deciding: ask the leader, and mirror its splits.

* A request's lazy load is sent to the leader's admin API (``POST /models/{name}/load``,
  with this replica's admin token: the replicas share their settings); the follower then
  waits until its own view of the Tritons shows the model ready (``Fleet._follow_load``).
* A rollout's version split lives in the leader's memory; a follower reads the rollouts
  under way from the store every second and applies the same split to its own gateway, so
  that no request through any replica reaches a version before its step. A rollout that
  ended badly a moment ago keeps naming the active version until the leader's reload has
  unloaded the target (``SETTLE_S``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import quote

import httpx

from controlplane.cluster.leadership import Leadership
from controlplane.errors import ControlPlaneError, ErrorCode, TritonUnavailable
from controlplane.fleet.fleet import Fleet
from controlplane.serving.versions import VersionSplit
from controlplane.store.base import utcnow
from controlplane.store.rollouts import RolloutStore
from controlplane.types import ModelName

log = logging.getLogger(__name__)

#: a rollout rolled back or aborted this recently still names the active version
SETTLE_S = 30.0


class Follower:
    def __init__(self, fleet: Fleet, leadership: Leadership, rollouts: RolloutStore,
                 token: str | None, timeout_s: float) -> None:
        self.fleet = fleet
        self.leadership = leadership
        self.rollouts = rollouts
        self.token = token
        self.timeout_s = timeout_s

    def not_leader(self) -> str:
        ls = self.leadership
        where = ls.leader_address or "unknown yet"
        holder = ls.lease.holder if ls.lease is not None else "none yet"
        return (f"replica '{ls.replica}' follows: the leader is '{holder}' at {where}; "
                "send writes there")

    async def forward_load(self, model: ModelName) -> None:
        """Ask the leader to load ``model``; raises TritonUnavailable (no leader, or it did
        not answer) or the leader's own error (its code kept)."""
        address = self.leadership.leader_address
        if address is None or self.leadership.is_leader:
            raise TritonUnavailable(self.not_leader())
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                r = await http.post(f"{address}/models/{quote(model, safe='')}/load",
                                    headers=headers)
        except httpx.HTTPError as exc:
            raise TritonUnavailable(f"the leader at {address} did not answer a load of "
                                    f"'{model}': {exc}") from None
        if r.status_code >= 400:
            try:
                error = r.json()["error"]
                raise ControlPlaneError(f"the leader: {error['message']}",
                                        code=ErrorCode(error["code"]))
            except (ValueError, KeyError, TypeError):
                raise TritonUnavailable(f"the leader answered {r.status_code} to a load of "
                                        f"'{model}'") from None

    async def mirror_splits(self) -> None:
        """The leader's version splits, read from the store (a loop, every second)."""
        if self.leadership.is_leader:
            return
        splits: dict[ModelName, VersionSplit] = {}
        seen: set[ModelName] = set()
        recent = utcnow() - timedelta(seconds=SETTLE_S)
        for row in await self.rollouts.listed(limit=200):
            if row.model in seen:
                continue  # newest first: the newest rollout of a model decides
            seen.add(row.model)
            if row.state in ("verifying", "shifting", "paused"):
                splits[row.model] = VersionSplit(row.active, row.version, row.share)
            elif row.state in ("rolled_back", "aborted") and row.updated_at > recent:
                splits[row.model] = VersionSplit(row.active, row.version, 0.0)
        if splits != self.fleet.splits:
            self.fleet.splits = splits
            await self.fleet.publish()
