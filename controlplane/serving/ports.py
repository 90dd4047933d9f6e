"""The ports the serving core depends on, and nothing else.

In the control process the fleet implements :class:`Replicas` (``fleet/replicas.py``) and
the traffic recorder :class:`Observations`; a gateway worker implements both over its pipe
to the control process, from a routing table pushed to it. A :class:`Replica` is what a
request is sent to: one model's copy on one Triton instance, reached through the instance's
upstream.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from controlplane.serving.facts import Sequence
from controlplane.serving.status import Status
from controlplane.serving.upstream import Upstream
from controlplane.serving.versions import VersionSplit
from controlplane.traffic.observation import Observation


class Replica(Protocol):
    """A Triton instance as the router and the path see it."""

    @property
    def name(self) -> str: ...
    @property
    def outstanding(self) -> int: ...
    @property
    def cordoned(self) -> bool: ...
    @property
    def live(self) -> bool:
        """Its Triton serves (draining or not): open sequences may still reach it."""
    @property
    def upstream(self) -> Upstream | None: ...
    def serves(self, model: str) -> bool:
        """The router may send it a request for ``model`` now (the hot path)."""
    def weight(self, model: str) -> float:
        """Its share of ``model``'s traffic relative to the other replicas' (1: equal)."""


class Replicas(Protocol):
    """Where requests go, and what the path tells of what happened."""

    def route(self, model: str, exclude: Collection[str] = (),
              sequence: Sequence | None = None) -> Replica | None:
        """A replica for one request now (the hot path), or None."""

    def ready_now(self, model: str) -> bool:
        """A replica the router may pick serves ``model`` now."""

    async def wait_ready(self, model: str, budget_s: float, exclude: Collection[str] = ()
                         ) -> None:
        """Wait for ``model`` to be ready outside ``exclude``, loading it on one instance if
        none has it. Raises ModelNotFound, TritonUnavailable, ModelLoadFailed, Conflict or
        DeadlineExceeded (the load goes on)."""

    def retry_on(self, replica: Replica, model: str, status: Status,
                 sequence: Sequence | None) -> bool:
        """Whether a request that failed on ``replica`` goes to another one."""

    def failed(self, instance: str, model: str, status: Status, message: str) -> None:
        """A replica answered a request with an error (it may be lost, or its Triton dead)."""

    def why_unavailable(self) -> str: ...

    def split(self, model: str) -> VersionSplit | None:
        """The model's traffic between its active and target versions during a rollout
        (None: no rollout; requests go as they came)."""


class Observations(Protocol):
    """Where the outcome of every request goes (the traffic recorder)."""

    @property
    def enabled(self) -> bool: ...
    def record(self, observation: Observation) -> None: ...
    def wants_payload(self, observation: Observation, size: int) -> bool: ...
    def wants_witness(self) -> bool: ...
