"""The fleet as the rest of the control plane sees it: models, not instances.

The gateway, the scheduler and the admin API ask "is this model ready, load it, unload it";
the fleet answers over every instance's lifecycle. A model's status is its best replica's
(ready > warming > loading > unloading > failed > cold). A cold model is loaded on ONE
instance however many requests wait for it: the first caller's choice is shared by a task per
model, and a load in flight anywhere is joined rather than started twice. That task outlives
its instance: when the instance dies or is drained during the load, the load moves to another
one, and every waiter still waits within its own deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from controlplane.background import Background
from controlplane.config import FleetSettings
from controlplane.errors import Conflict, InstanceNotFound, TritonUnavailable
from controlplane.fleet.cold import ColdLoads
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.sequences import Sequences
from controlplane.fleet.shared_memory import SharedMemoryRegistry
from controlplane.fleet.states import InstanceState
from controlplane.fleet.traits import ModelTraits
from controlplane.lifecycle.manager import OPERATOR_TRIGGERS, ModelManager
from controlplane.lifecycle.states import ModelState, ModelStatus
from controlplane.policy.replicas import ReplicaPlan
from controlplane.serving.router import Router
from controlplane.serving.versions import VersionSplit
from controlplane.store.base import utcnow
from controlplane.triton.repository import ModelRepository
from controlplane.types import InstanceName, ModelName

#: how a replica's state ranks when the fleet reports one state per model
RANK = {ModelState.READY: 5, ModelState.WARMING: 4, ModelState.LOADING: 3,
        ModelState.UNLOADING: 2, ModelState.FAILED: 1, ModelState.COLD: 0}
#: states that hold memory on an instance
RESIDENT = frozenset({ModelState.READY, ModelState.WARMING, ModelState.LOADING,
                      ModelState.UNLOADING})
#: loads the fleet starts for replicas it adds: the scheduler's room-making is not asked
#: (the model is resident already); the instance's own budget is kept by ``placement.py``
REPLICA_TRIGGER = "replica"
#: how often a follower re-reads Triton's index while the leader loads for it (s)
FOLLOW_POLL_S = 0.2
#: the same for the models a joining instance loads before it serves (``prewarm.py``)
PREWARM_TRIGGER = "prewarm"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetAction:
    """One thing the fleet did on its own (replicas, failover, drain), for the admin API."""

    at: datetime
    kind: str
    model: ModelName
    instance: InstanceName
    why: str
    outcome: str


class MembershipListener(Protocol):
    """Told when an instance joins or leaves the fleet (synchronously, in order)."""

    def attached(self, rt: InstanceRuntime) -> None: ...
    def detached(self, rt: InstanceRuntime) -> None: ...


class Fleet:
    def __init__(self, runtimes: Sequence[InstanceRuntime], repository: ModelRepository,
                 options: FleetSettings, pinned: Sequence[ModelName] = (),
                 call_timeout_s: float = 10.0) -> None:
        self.runtimes = {rt.name: rt for rt in runtimes}
        self._order = list(runtimes)
        self.repository = repository
        self.options = options
        self.pinned = list(pinned)
        #: stateful or not, a sequence's idle limit (``traits.py``)
        self.traits = ModelTraits(repository)
        self.stateful = self.traits.stateful
        self.router = Router(lambda: self._order, sticky=self.stateful)
        #: awaited with (model, trigger) before a load the scheduler did not plan (its
        #: ``make_room``); not for replicas the fleet adds
        self.before_load: list[Callable[[ModelName, str], Awaitable[object]]] = []
        #: the replica plan last applied (``placement.py``)
        self.plan = ReplicaPlan({}, {})
        #: megabytes a model holds on an instance (the scheduler's profiles once it runs)
        self.memory_mb: Callable[[ModelName], float] = self.measured_mb
        #: forecast requests per second per model, from the last plan (failover order)
        self.rates: dict[ModelName, float] = {}
        #: models the operator or a rule keeps resident (never evicted to make room)
        self.held: Callable[[ModelName], bool] = lambda model: False
        self.actions: deque[FleetAction] = deque(maxlen=200)
        #: work the fleet goes on with after a caller returned (a drained instance's stateful
        #: models, unloaded once their sequences end)
        self.background = Background()
        #: where each open sequence of a stateful model lives (``sequences.py``)
        self.sequences = Sequences(self.traits.sequence_idle_s)
        #: shared-memory registrations clients made through the gateway, for every instance
        self.shared_memory = SharedMemoryRegistry(self._send)
        self.call_timeout_s = call_timeout_s
        #: one load per cold model, shared by its callers (``cold.py``)
        self.cold = ColdLoads(self)
        #: awaited after a replica stops taking requests (leaving, draining): returns once
        #: the gateway's worker processes route by a table without it (a no-op without them)
        self.publish: Callable[[], Awaitable[object]] = _published
        #: whether this control-plane replica decides loads and unloads (always, unless it
        #: is a follower of a replicated control plane: ``cluster/``)
        self.leads: Callable[[], bool] = lambda: True
        #: a follower's way to have a model loaded: ask the leader (raises as ``load``)
        self.forward_load: Callable[[ModelName], Awaitable[object]] | None = None
        #: why this replica does not decide (who does, and where)
        self.not_leader: Callable[[], str] = lambda: "this replica follows"
        #: model -> its traffic between the active and the target version while a rollout
        #: shifts it (``rollouts/``); requests that name a version get that one
        self.splits: dict[ModelName, VersionSplit] = {}
        #: told (in order) of each instance that joins (``attached``) or leaves
        #: (``detached``): budgets, failover, crash tracing, metrics, placement
        self.membership_listeners: list[MembershipListener] = []
        #: instances that left, newest last (``GET /instances/{name}`` shows ``retired``)
        self.retired: deque[tuple[InstanceName, str, datetime]] = deque(maxlen=50)

    # -- membership (only ``membership.py`` calls these) -------------------------------------
    def attach(self, rt: InstanceRuntime) -> None:
        """Add a started runtime to the fleet and tell the listeners; raises Conflict for a
        name in use."""
        if rt.name in self.runtimes:
            raise Conflict(f"instance '{rt.name}' is already in the fleet")
        # new containers rather than in-place changes: a reader iterating the old order
        # (the router, a status page) finishes on a consistent list
        self.runtimes = {**self.runtimes, rt.name: rt}
        self._order = [*self._order, rt]
        for listener in self.membership_listeners:
            listener.attached(rt)

    def detach(self, name: InstanceName, why: str) -> InstanceRuntime:
        """Take ``name`` out of the fleet (it no longer routes, loads or counts) and tell the
        listeners; the caller closes the runtime. Raises InstanceNotFound."""
        rt = self.runtime(name)
        self.runtimes = {n: r for n, r in self.runtimes.items() if n != name}
        self._order = [r for r in self._order if r is not rt]
        self.sequences.forget(name)
        self.shared_memory.forget(name)
        self.retired.append((name, why, utcnow()))
        for listener in self.membership_listeners:
            listener.detached(rt)
        return rt

    # -- reading ------------------------------------------------------------------------------
    @property
    def order(self) -> list[InstanceRuntime]:
        return self._order

    def managers(self) -> list[tuple[InstanceRuntime, ModelManager]]:
        return [(rt, rt.manager) for rt in self._order if rt.manager is not None]

    def ready_now(self, model: ModelName, exclude: Collection[InstanceName] = ()) -> bool:
        """The gateway's hot-path check: a replica the router may pick (ready, on an instance
        that takes requests, not leaving), outside ``exclude``."""
        return any(rt.serves(model) and rt.name not in exclude for rt in self._order)

    def ready_elsewhere(self, model: ModelName, rt: InstanceRuntime) -> bool:
        return self.ready_now(model, exclude=(rt.name,))

    def replicas(self, model: ModelName) -> list[ModelStatus]:
        """One status per instance (``status.instance``); raises ModelNotFound."""
        return [m.status(model) for _, m in self.managers()]

    def status(self, model: ModelName) -> ModelStatus:
        """The best replica's status, ``busy`` when any replica is."""
        pairs = [(rt, m.status(model)) for rt, m in self.managers()]
        if not pairs:
            raise TritonUnavailable("control plane starting: no Triton instance yet")
        _, best = max(pairs, key=lambda p: (RANK[p[1].state], p[0].routable))
        return replace(best, busy=any(s.busy for _, s in pairs))

    def state(self, model: ModelName) -> ModelState:
        return self.status(model).state

    def statuses(self) -> list[ModelStatus]:
        self.traits.clear()
        names = self.repository.names(refresh=True)
        for _, m in self.managers():
            m.statuses()  # picks up models added to the repository since start-up
        return [self.status(name) for name in sorted(names)]

    def resident_on(self, rt: InstanceRuntime) -> list[ModelStatus]:
        assert rt.manager is not None
        return [s for s in rt.manager.statuses() if s.state in RESIDENT]

    def used_mb(self, rt: InstanceRuntime) -> float:
        return sum(self.memory_mb(s.name) for s in self.resident_on(rt))

    def free_mb(self, rt: InstanceRuntime) -> float:
        budget = rt.budget_mb()
        return math.inf if budget is None else budget - self.used_mb(rt)

    def measured_mb(self, model: ModelName) -> float:
        """What the plugin measured at the model's last load on any instance (MiB); 0
        when never measured."""
        for _, m in self.managers():
            with_memory = m.status(model).memory_bytes
            if with_memory:
                return with_memory / 2**20
        return 0.0

    # -- choosing an instance -----------------------------------------------------------------
    def choose(self, model: ModelName, *, exclude: Collection[InstanceName] = ()
               ) -> InstanceRuntime:
        """Where a load of ``model`` goes: where one is in flight already, else where the
        replica plan puts it, else the accepting instance (serving, not draining or cordoned)
        with the most free budget. Raises ModelNotFound, or TritonUnavailable when no
        instance can take it now."""
        self.status(model)  # an unknown name is NOT_FOUND before anything else
        routable = [rt for rt, _ in self.managers() if rt.accepting and rt.name not in exclude]
        if not routable:
            raise TritonUnavailable(f"no Triton instance can load '{model}' now: "
                                    + self.why_unavailable())
        usable = [rt for rt in routable
                  if rt.manager is not None and not rt.manager.status(model).disabled]
        if not usable:  # disabled everywhere: its manager's load says why
            return routable[0]
        for rt in usable:
            assert rt.manager is not None
            s = rt.manager.status(model)
            if s.busy or s.state in (ModelState.LOADING, ModelState.WARMING):
                return rt
        planned = self.plan.instances_of(model)
        for rt in usable:
            if rt.name in planned and rt.manager is not None \
                    and rt.manager.state(model) is not ModelState.READY:
                return rt
        return min(usable, key=lambda rt: (-self.free_mb(rt), rt.outstanding,
                                           self._order.index(rt)))

    def why_unavailable(self) -> str:
        parts = []
        for rt in self._order:
            if rt.draining or rt.cordoned:
                parts.append(f"{rt.name}: draining")
            elif not rt.started or rt.phase is not InstanceState.SERVING:
                parts.append(f"{rt.name}: {rt.phase.value}")
            elif rt.supervisor is None or not rt.supervisor.serving:
                reason = rt.supervisor.down_reason() if rt.supervisor else "starting"
                parts.append(f"{rt.name}: {reason}")
        return "; ".join(parts) or "no instance configured"

    @property
    def serving(self) -> bool:
        """Some instance serves and takes traffic."""
        return any(rt.routable for rt in self._order)

    def down_reason(self) -> str | None:
        """Why no instance can serve at all (None while one can): cold requests fail fast."""
        if any(rt.routable for rt in self._order):
            return None
        return "no Triton instance is serving: " + self.why_unavailable()

    # -- operations ---------------------------------------------------------------------------
    async def ensure_ready(self, model: ModelName, *, trigger: str = "gateway",
                           exclude: Collection[InstanceName] = ()) -> None:
        """Lazy load for a request: ready somewhere routable (outside ``exclude``), or one
        load on one instance."""
        if not self.ready_now(model, exclude):
            await self.load(model, trigger=trigger, exclude=exclude)

    async def load(self, model: ModelName, *, trigger: str = "api",
                   instance: InstanceName | None = None,
                   exclude: Collection[InstanceName] = ()) -> ModelStatus:
        """Load ``model`` on ``instance``, or (None) make sure it is ready on one outside
        ``exclude``: concurrent callers share one load, which moves to another instance when
        its own dies or is drained meanwhile. An operator's load on an instance keeps that
        replica there (see ``ModelManager.keep``). Errors as :meth:`ModelManager.load`, plus
        ModelNotFound for an unknown instance and TritonUnavailable when no instance can
        take it."""
        if not self.leads():
            return await self._follow_load(model, trigger, exclude)
        if trigger in OPERATOR_TRIGGERS:  # the operator's word ends every instance's hold
            for _, m in self.managers():
                if m.held(model) or m.status(model).quarantined:
                    m.release(model)
        if instance is not None:
            rt = self.runtime(instance)
            # a warming or standby instance takes the loads planned for it (not routed to
            # yet); a draining or cordoned one only the operator's
            if (rt.draining or rt.cordoned) and rt.supervisor is not None \
                    and rt.supervisor.serving and trigger not in OPERATOR_TRIGGERS:
                raise TritonUnavailable(f"instance '{instance}' is draining")
            assert rt.manager is not None
            await rt.manager.load(model, trigger=trigger)
            if trigger in OPERATOR_TRIGGERS:
                rt.manager.keep(model)
            return rt.manager.status(model)
        if not self.ready_now(model, exclude):
            await self.cold.load(model, trigger, exclude)
        return self.status(model)

    async def unload(self, model: ModelName, *, trigger: str = "api",
                     instance: InstanceName | None = None, force: bool = False
                     ) -> ModelStatus:
        """Unload ``model`` from ``instance``, or (None) from every instance; the first
        error is raised after every replica was tried. An automatic unload leaves the
        replicas the operator keeps."""
        if not self.leads():
            raise TritonUnavailable(self.not_leader())
        if instance is not None:
            rt = self.runtime(instance)
            assert rt.manager is not None
            return await rt.manager.unload(model, trigger=trigger, force=force)
        self.status(model)
        operator = trigger in OPERATOR_TRIGGERS
        results = await asyncio.gather(
            *(m.unload(model, trigger=trigger, force=force) for _, m in self.managers()
              if operator or (m.state(model) is not ModelState.COLD and not m.kept(model))),
            return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return self.status(model)

    async def reload(self, model: ModelName, *, trigger: str = "api") -> ModelStatus:
        """Reload every ready replica (each keeps serving meanwhile); a model ready nowhere
        is loaded on one instance."""
        if not self.leads():
            raise TritonUnavailable(self.not_leader())
        ready = [m for _, m in self.managers() if m.state(model) is ModelState.READY]
        if not ready:
            return await self.load(model, trigger=trigger)
        results = await asyncio.gather(*(m.reload(model, trigger=trigger) for m in ready),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return self.status(model)

    async def _follow_load(self, model: ModelName, trigger: str,
                           exclude: Collection[InstanceName]) -> ModelStatus:
        """A follower replica's load: a request's lazy load is asked of the leader, then
        waited for here (each manager re-reads its Triton's index); anything else is the
        leader's to do (TritonUnavailable naming it)."""
        self.status(model)  # an unknown name is NOT_FOUND before anything else
        if trigger != "gateway" or self.forward_load is None:
            raise TritonUnavailable(self.not_leader())
        await self.forward_load(model)
        while not self.ready_now(model, exclude):
            for _, m in self.managers():
                await m.reconcile()
            if self.ready_now(model, exclude):
                break
            await asyncio.sleep(FOLLOW_POLL_S)
        return self.status(model)

    async def _send(self, instance: InstanceName, method: str, request: bytes) -> bytes:
        """One server-wide RPC to one instance's Triton (raw bytes both ways)."""
        rt = self.runtime(instance)
        if rt.upstream is None:
            raise TritonUnavailable(f"instance '{instance}' has not started")
        response: bytes = await rt.upstream.call(method)(request, timeout=self.call_timeout_s)
        return response

    async def close(self) -> None:
        await self.background.close()

    def runtime(self, name: InstanceName) -> InstanceRuntime:
        rt = self.runtimes.get(name)
        if rt is None:
            raise InstanceNotFound(name, list(self.runtimes))
        return rt

    async def run_before_load(self, model: ModelName, trigger: str) -> None:
        """Each manager's before-load hook: the scheduler's room-making, except for replicas
        of a model that is resident already."""
        if trigger in (REPLICA_TRIGGER, PREWARM_TRIGGER):
            return
        for hook in self.before_load:
            await hook(model, trigger)

    def record(self, kind: str, model: ModelName, instance: InstanceName, why: str,
               outcome: str) -> None:
        self.actions.append(FleetAction(utcnow(), kind, model, instance, why,
                                        outcome))


async def _published() -> None:
    """No gateway workers: the router reads the runtimes themselves."""
