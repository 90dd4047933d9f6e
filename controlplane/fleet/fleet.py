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

from controlplane.config import FleetSettings
from controlplane.errors import ControlPlaneError, InstanceNotFound, TritonUnavailable
from controlplane.fleet.router import Router
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.sequences import DEFAULT_IDLE_S, Sequences
from controlplane.fleet.shared_memory import SharedMemoryRegistry
from controlplane.lifecycle.manager import OPERATOR_TRIGGERS, ModelManager
from controlplane.lifecycle.states import ModelState, ModelStatus
from controlplane.policy.replicas import ReplicaPlan
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


class Fleet:
    def __init__(self, runtimes: Sequence[InstanceRuntime], repository: ModelRepository,
                 options: FleetSettings, pinned: Sequence[ModelName] = (),
                 call_timeout_s: float = 10.0) -> None:
        self.runtimes = {rt.name: rt for rt in runtimes}
        self._order = list(runtimes)
        self.repository = repository
        self.options = options
        self.pinned = list(pinned)
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
        #: where each open sequence of a stateful model lives (``sequences.py``)
        self.sequences = Sequences(self.sequence_idle_s)
        #: shared-memory registrations clients made through the gateway, for every instance
        self.shared_memory = SharedMemoryRegistry(self._send)
        self.call_timeout_s = call_timeout_s
        #: model -> the shared cold load and the instances it must not use
        self._cold: dict[ModelName, tuple[asyncio.Task[None], frozenset[InstanceName]]] = {}
        self._stateful: dict[ModelName, bool] = {}
        self._idle_s: dict[ModelName, float] = {}

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

    def stateful(self, model: ModelName) -> bool:
        """``sequence_batching``: one replica serves it (cached; refreshed by statuses)."""
        found = self._stateful.get(model)
        if found is None:
            try:
                found = self.repository.spec(model).sequence_batching
            except ControlPlaneError:
                found = False
            self._stateful[model] = found
        return found

    def sequence_idle_s(self, model: ModelName) -> float:
        """How long Triton keeps an idle sequence of ``model`` (its
        ``max_sequence_idle_microseconds``; 1 s when unset, Triton's default)."""
        found = self._idle_s.get(model)
        if found is None:
            try:
                config = self.repository.spec(model).config.get("sequence_batching") or {}
                micros = int(config.get("max_sequence_idle_microseconds") or 0)
            except (ControlPlaneError, TypeError, ValueError):
                micros = 0
            found = self._idle_s[model] = micros / 1e6 if micros > 0 else DEFAULT_IDLE_S
        return found

    def statuses(self) -> list[ModelStatus]:
        self._stateful.clear()
        self._idle_s.clear()
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
        if trigger in OPERATOR_TRIGGERS:  # the operator's word ends every instance's hold
            for _, m in self.managers():
                if m.held(model) or m.status(model).quarantined:
                    m.release(model)
        if instance is not None:
            rt = self.runtime(instance)
            if not rt.accepting and rt.supervisor is not None and rt.supervisor.serving \
                    and trigger not in OPERATOR_TRIGGERS:
                raise TritonUnavailable(f"instance '{instance}' is draining")
            assert rt.manager is not None
            await rt.manager.load(model, trigger=trigger)
            if trigger in OPERATOR_TRIGGERS:
                rt.manager.keep(model)
            return rt.manager.status(model)
        if self.ready_now(model, exclude):
            return self.status(model)
        excluded = frozenset(exclude)
        found = self._cold.get(model)
        if found is None or not excluded <= found[1]:
            task = asyncio.create_task(self._load_somewhere(model, trigger, set(excluded)),
                                       name=f"fleet-load-{model}")
            self._cold[model] = found = (task, excluded)
            task.add_done_callback(lambda t: self._cold_done(model, t))
        await asyncio.shield(found[0])
        return self.status(model)

    async def _load_somewhere(self, model: ModelName, trigger: str,
                              exclude: set[InstanceName]) -> None:
        """One load of ``model`` on the instance :meth:`choose` names; if that instance dies
        or stops accepting during the load, the next one (the waiters keep waiting)."""
        while True:
            rt = self.choose(model, exclude=exclude)
            assert rt.manager is not None
            try:
                await rt.manager.load(model, trigger=trigger)
            except ControlPlaneError as exc:
                if rt.accepting and not _triton_went_away(exc):
                    raise
                log.warning("load of %s on %s did not finish (%s): loading it elsewhere",
                            model, rt.name, exc)
                exclude.add(rt.name)
                continue
            if self.ready_now(model, exclude) or rt.accepting:
                return
            exclude.add(rt.name)  # ready, but its instance stopped taking requests meanwhile

    def _cold_done(self, model: ModelName, task: asyncio.Task[None]) -> None:
        found = self._cold.get(model)
        if found is not None and found[0] is task:
            del self._cold[model]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up

    async def unload(self, model: ModelName, *, trigger: str = "api",
                     instance: InstanceName | None = None, force: bool = False
                     ) -> ModelStatus:
        """Unload ``model`` from ``instance``, or (None) from every instance; the first
        error is raised after every replica was tried. An automatic unload leaves the
        replicas the operator keeps."""
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
        ready = [m for _, m in self.managers() if m.state(model) is ModelState.READY]
        if not ready:
            return await self.load(model, trigger=trigger)
        results = await asyncio.gather(*(m.reload(model, trigger=trigger) for m in ready),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return self.status(model)

    async def warm_pinned(self) -> dict[ModelName, str]:
        """Start-up: each pinned model, highest priority first, on ``pinned_replicas``
        instances (fewer when fewer serve). Returns {model: error} for failures."""
        failures: dict[ModelName, str] = {}
        for model in self.pinned:
            usable = [rt for rt in self._order if rt.accepting]
            wanted = 1 if self.stateful(model) else max(
                1, min(self.options.pinned_replicas, len(usable)))
            try:
                first = self.choose(model)
                others = sorted((rt for rt in usable if rt is not first),
                                key=lambda rt: (-self.free_mb(rt), self._order.index(rt)))
                targets = [first, *others][:wanted]
                results = await asyncio.gather(
                    *(self.load(model, trigger="startup", instance=rt.name) for rt in targets),
                    return_exceptions=True)
                errors = [r for r in results if isinstance(r, BaseException)]
                if len(errors) == len(results):
                    raise errors[0]
            except ControlPlaneError as exc:
                failures[model] = str(exc)
        return failures

    async def _send(self, instance: InstanceName, method: str, request: bytes) -> bytes:
        """One server-wide RPC to one instance's Triton (raw bytes both ways)."""
        rt = self.runtime(instance)
        if rt.upstream is None:
            raise TritonUnavailable(f"instance '{instance}' has not started")
        response: bytes = await rt.upstream.call(method)(request, timeout=self.call_timeout_s)
        return response

    def runtime(self, name: InstanceName) -> InstanceRuntime:
        rt = self.runtimes.get(name)
        if rt is None:
            raise InstanceNotFound(name, list(self.runtimes))
        return rt

    async def run_before_load(self, model: ModelName, trigger: str) -> None:
        """Each manager's before-load hook: the scheduler's room-making, except for replicas
        of a model that is resident already."""
        if trigger == REPLICA_TRIGGER:
            return
        for hook in self.before_load:
            await hook(model, trigger)

    def record(self, kind: str, model: ModelName, instance: InstanceName, why: str,
               outcome: str) -> None:
        self.actions.append(FleetAction(utcnow(), kind, model, instance, why,
                                        outcome))


def _triton_went_away(exc: BaseException) -> bool:
    """A load failed because its Triton stopped serving (died, hung, restarting), not
    because of the model."""
    return isinstance(exc, TritonUnavailable) or isinstance(exc.__cause__, TritonUnavailable)
