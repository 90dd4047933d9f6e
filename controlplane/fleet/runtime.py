"""One Triton instance's runtime: the server, its lifecycle, its supervisor and its upstream.

Built, then started on its own ``AsyncExitStack`` (the shape of uvicorn's and MLServer's
servers): every part's ``close`` is pushed as the part starts, so :meth:`close` -- of this
instance alone, while the rest of the fleet runs -- tears down in reverse order by
construction: the supervisor first (a stop is no crash, and nothing restarts while we stop),
then the reconcile loop, the gateway's channel, the lifecycle, the probes, Triton last. A
start that fails half-way closes what it opened.

Its state (``states.py``) is a membership phase set only through :meth:`move`, with the
supervisor's view laid over it; ``routable`` derives from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controlplane.config import InstanceSettings, Settings
from controlplane.fleet.provider import Provider
from controlplane.fleet.states import STARTED, InstanceState, check
from controlplane.lifecycle.backoff import BackoffPolicy
from controlplane.lifecycle.manager import LoadPreparer, ModelManager
from controlplane.loops import Loops
from controlplane.serving.upstream import Upstream
from controlplane.store.database import Database
from controlplane.store.lifecycle import LifecycleStore
from controlplane.triton.distribution import missing_backends
from controlplane.triton.instance import TritonInstance
from controlplane.triton.repository import ModelRepository
from controlplane.triton.supervisor import TritonSupervisor
from controlplane.types import InstanceName, ModelName
from controlplane.warmup.batch_stats import BatchStatsTracker
from controlplane.warmup.configs import WarmupStore
from controlplane.warmup.preparer import WarmupPreparer
from controlplane.warmup.probe import WarmupProbe

log = logging.getLogger(__name__)


@dataclass
class Shared:
    """What every runtime of a fleet uses alike (one store, one repository, one preparer)."""

    settings: Settings
    database: Database
    repository: ModelRepository
    warmups: WarmupStore
    loops: Loops
    #: what a load sends (warm-up, placement); None: the model's own config
    preparer: LoadPreparer | None
    #: the warm-up generator, whose probes run per instance; None with warm-up off
    warmup: WarmupPreparer | None
    #: called with each runtime once its manager exists, before it starts: the hook wiring
    wire: Callable[[InstanceRuntime], None] = lambda runtime: None
    #: after each instance's name in its lifecycle store key ("" but for a replica of a
    #: replicated control plane: ``cluster/role.py``)
    scope: str = ""


@dataclass(eq=False)
class InstanceRuntime:
    name: InstanceName
    spec: InstanceSettings
    provider: Provider
    shared: Shared
    #: its membership phase (``states.py``); set through :meth:`move` only
    phase: InstanceState = InstanceState.PROVISIONING
    #: why it is in its phase, and since when (monotonic seconds)
    phase_reason: str = "starting"
    phase_since: float = field(default_factory=time.monotonic)
    #: who asked for it: ``settings``, ``operator`` (``POST /instances``) or ``autoscaler``
    origin: str = "settings"
    #: no new loads or replicas go here, while requests still do: the first step of a
    #: drain, while what it serves is made ready elsewhere (Kubernetes' word for a node)
    cordoned: bool = False
    #: models whose replica here is being removed (trim, drain, eviction with another
    #: replica ready): the router no longer picks it, in-flight requests finish first
    leaving: set[ModelName] = field(default_factory=set)
    #: model -> this replica's router weight (absent: 1, an equal share; 0: no new
    #: requests): a ramp or a canary is a weight
    weights: dict[ModelName, float] = field(default_factory=dict)
    #: model -> why its replica here failed a health check (``health.py``): no requests
    #: until a probe passes again
    unhealthy: dict[ModelName, str] = field(default_factory=dict)
    instance: TritonInstance | None = None
    manager: ModelManager | None = None
    supervisor: TritonSupervisor | None = None
    probe: WarmupProbe | None = None
    batch_stats: BatchStatsTracker | None = None
    upstream: Upstream | None = None
    #: bumped each time its Triton restarted (gateway workers reopen their channels)
    epoch: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def loops(self) -> Loops:
        """Its loops in the shared registry (``reconcile@b``), or unscoped when it is the
        only instance (``reconcile``, as before there were fleets)."""
        return (self.shared.loops if self.provider.is_single(self.name)
                else self.shared.loops.scoped(self.name))

    @property
    def store_key(self) -> str:
        """Its lifecycle records' key: its name, and in a replicated control plane this
        replica's scope after it (each replica keeps its own view)."""
        return self.name + self.shared.scope

    @property
    def state(self) -> InstanceState:
        """Its phase, or ``down``/``restarting`` while its Triton does not serve."""
        sup = self.supervisor
        if self.phase not in STARTED or sup is None or sup.serving:
            return self.phase
        return (InstanceState.RESTARTING if sup.state.value == "restarting"
                else InstanceState.DOWN)

    def move(self, to: InstanceState, why: str) -> None:
        """Change phase as ``states.TRANSITIONS`` allows; raises InvalidInstanceTransition."""
        self.phase = check(self.name, self.phase, to)
        self.phase_reason, self.phase_since = why, time.monotonic()
        log.info("instance %s: %s (%s)", self.name, to.value, why)

    @property
    def draining(self) -> bool:
        """No new requests or loads go here; in-flight ones (and open sequences) finish
        (``drain.py``)."""
        return self.phase is InstanceState.DRAINING

    @property
    def started(self) -> bool:
        """Its Triton was started and its lifecycle built (warming and after)."""
        return self.phase in STARTED

    @property
    def routable(self) -> bool:
        """Serving and Triton live: the router and new loads may use it."""
        return (self.phase is InstanceState.SERVING and self.supervisor is not None
                and self.supervisor.serving)

    @property
    def accepting(self) -> bool:
        """Routable and not cordoned: new loads and replicas may go here."""
        return self.routable and not self.cordoned

    @property
    def live(self) -> bool:
        """Its Triton serves (draining or not): open sequences may still reach it."""
        return self.supervisor is not None and self.supervisor.serving

    def serves(self, model: ModelName) -> bool:
        """The router may pick this replica of ``model`` now (the hot path)."""
        return (self.routable and model not in self.leaving and model not in self.unhealthy
                and self.manager is not None and self.manager.ready_now(model))

    def weight(self, model: ModelName) -> float:
        return self.weights.get(model, 1.0)

    @property
    def outstanding(self) -> int:
        return 0 if self.upstream is None else self.upstream.outstanding

    def budget_mb(self) -> float | None:
        return self.spec.memory_budget_mb

    async def start(self) -> None:
        """Start Triton (or attach), then the lifecycle, supervision and the upstream; on
        failure, close what was opened and raise (TritonStartError, TritonUnavailable)."""
        try:
            await self._start(self._stack)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Tear this instance down alone (reverse order of start); idempotent."""
        await self._stack.aclose()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        s, shared = self.shared.settings, self.shared
        self.instance = instance = await self.provider.open(self.name, self.spec)
        stack.push_async_callback(self._close_instance)
        self.batch_stats = BatchStatsTracker(instance.client, shared.warmups)
        if shared.warmup is not None:
            self.probe = WarmupProbe(preparer=shared.warmup, client=instance.client,
                                     options=s.warmup.probe, batch_stats=self.batch_stats)
            stack.push_async_callback(self.probe.close)
        disabled = {**self._missing_backends(),
                    **{name: "[models] disabled = true in the settings"
                       for name, m in s.models.items() if m.disabled}}
        self.manager = manager = ModelManager(
            instance=instance, repository=shared.repository,
            store=LifecycleStore(shared.database, self.store_key),
            pinned=[m for m in s.pinned_models() if m in shared.repository],
            preparer=shared.preparer, probe=self.probe,
            backoff=BackoffPolicy(initial_s=s.lifecycle.retry_initial_s,
                                  multiplier=s.lifecycle.retry_multiplier,
                                  max_s=s.lifecycle.retry_max_s),
            disabled=disabled)
        shared.wire(self)
        await manager.start()
        stack.push_async_callback(manager.close)
        self.upstream = Upstream(self.name, instance.grpc_url, instance.http_url)
        self.upstream.open()
        stack.push_async_callback(self.upstream.close)
        stack.push_async_callback(self._cancel_tasks)
        self._tasks.append(asyncio.create_task(self.loops.every(
            "reconcile", s.triton.reconcile_interval_s, manager.reconcile),
            name=f"reconcile-{self.name}"))
        self.supervisor = instance.supervise(s.triton.supervision, self.loops)
        self.supervisor.on_restart.append(self.upstream.reopen)
        self.supervisor.on_restart.append(self._next_epoch)
        self.supervisor.listeners.append(manager)
        stack.push_async_callback(self.supervisor.close)

    async def _next_epoch(self) -> None:
        self.epoch += 1

    def start_supervision(self) -> None:
        """Begin watching Triton; after every listener is in place (the fleet's too)."""
        assert self.supervisor is not None
        self.supervisor.start()

    def _missing_backends(self) -> dict[ModelName, str]:
        """Models the embedded Triton has no backend for (an external one's are unknown)."""
        process = None if self.instance is None else self.instance.process
        return ({} if process is None
                else missing_backends(self.shared.repository, process.backend_dir))

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _close_instance(self) -> None:
        assert self.instance is not None
        try:
            await self.instance.close()
        except Exception as exc:  # one instance failing to stop must not stop the others'
            log.warning("stopping Triton instance %s: %s", self.name, exc)
