"""The composition root: builds every part from Settings, starts and stops them in order.

Build, then start: the fleet (one :class:`InstanceRuntime` per Triton instance) and every
component are built first; starting pushes each one's ``close`` on an ``AsyncExitStack``,
so ``stop`` unwinds in reverse order by construction. All hook wiring is in ``_wire``; each
group of parts is built in its own module (``fleet/assembly.py``, ``front_doors.py``,
``admin/server.py``, ``traffic/assembly.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from controlplane.admin.server import AdminServer
from controlplane.cluster.role import ClusterRole, store_scope
from controlplane.compile_cache.cold_start import ColdStarts
from controlplane.compile_cache.store import CompileCacheStore
from controlplane.config import Settings
from controlplane.errors import TritonUnavailable
from controlplane.fleet.assembly import FleetParts, spawn_all
from controlplane.fleet.listeners import FleetBatchStats
from controlplane.fleet.pinned import warm_pinned
from controlplane.fleet.runtime import InstanceRuntime, Shared
from controlplane.front_doors import FrontDoors
from controlplane.gateway.server import Gateway
from controlplane.gateway.workers.supervisor import GatewayWorkers
from controlplane.lifecycle.manager import LoadPreparer, ModelManager
from controlplane.loops import Loops
from controlplane.readiness import Readiness
from controlplane.rollouts.controller import DETECT_S, Rollouts
from controlplane.rollouts.verify import RecordedVerifier
from controlplane.rollouts.versions import ModelVersions, VersionPreparer
from controlplane.scheduler.driver import LiveScheduler
from controlplane.scheduler.jobs import JobRunner
from controlplane.scheduler.levels import Level
from controlplane.scheduler.placing import PlacingPreparer
from controlplane.stopping import bounded
from controlplane.store.database import Database
from controlplane.store.health import StoreHealth
from controlplane.store.instances import InstanceStore
from controlplane.store.rollouts import RolloutStore
from controlplane.traffic.assembly import build_recorder
from controlplane.traffic.recorder import TrafficRecorder
from controlplane.traffic.store import TrafficStore
from controlplane.triton.instance import TritonInstance
from controlplane.triton.repository import ModelRepository
from controlplane.triton.supervisor import TritonSupervisor
from controlplane.types import ModelName
from controlplane.warmup.configs import WarmupStore
from controlplane.warmup.drift import DriftWatcher
from controlplane.warmup.preparer import WarmupPreparer
from controlplane.warmup.probe import WarmupProbe

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        st = settings.store
        self.database = Database(settings.db_url, call_timeout_s=st.call_timeout_s,
                                 max_queued_writes=st.max_queued_writes, settle_s=st.settle_s)
        #: whether the store takes writes now (``/healthz``, ``/metrics``)
        self.store_health = StoreHealth(self.database, interval_s=st.probe_interval_s,
                                        stall_after_s=st.stall_after_s)
        self.repository = ModelRepository(settings.model_repository)
        self.readiness = Readiness()
        #: last run and last error of every background loop (``/healthz``)
        self.loops = Loops()
        self.warmups = WarmupStore(self.database)
        #: torch.compile artifacts kept between loads; None when switched off
        self.compile_cache = CompileCacheStore.from_settings(settings)
        self.cold_starts = (ColdStarts(self.compile_cache, settings.model_repository)
                            if self.compile_cache else None)
        self.traffic = TrafficStore(self.database, settings.instance_name)
        self.preparer: WarmupPreparer | None = None
        if settings.warmup.enabled:
            self.preparer = WarmupPreparer(repository=self.repository, warmups=self.warmups,
                                           traffic=self.traffic, options=settings.warmup,
                                           models=settings.models)
        load_preparer: LoadPreparer | None = self.preparer
        if settings.scheduler.enabled:
            load_preparer = PlacingPreparer(self.preparer, self.repository, self._device)
        #: each model's active (and target) version; every load pins it (``rollouts/``)
        rollout_store = RolloutStore(self.database)
        self.versions = ModelVersions(rollout_store, self.repository)
        load_preparer = VersionPreparer(load_preparer, self.versions)
        shared = Shared(settings=settings, database=self.database, repository=self.repository,
                        warmups=self.warmups, loops=self.loops, preparer=load_preparer,
                        warmup=self.preparer, wire=self._wire,
                        scope=store_scope(settings.cluster.replica)
                        if settings.cluster.enabled else "")
        #: the fleet, its membership and everything that keeps it (``fleet/assembly.py``)
        self.parts = parts = FleetParts(settings, shared, self.repository,
                                        InstanceStore(self.database))
        self.fleet, self.placer, self.crashes = parts.fleet, parts.placer, parts.crashes
        self.membership, self.ramp = parts.membership, parts.ramp
        self.load_watch, self.autoscaler = parts.load_watch, parts.autoscaler
        parts.health.version_of = self.versions.active
        #: one replica of several (``[cluster]``): who leads, what a follower does instead
        self.cluster: ClusterRole | None = ClusterRole(self) if settings.cluster.enabled \
            else None
        #: new versions verified and shifted to in steps
        self.rollouts = Rollouts(self.fleet, self.versions, rollout_store, settings,
                                 verifier=RecordedVerifier(self.repository, self.traffic,
                                                           self.warmups))
        self.drift: DriftWatcher | None = None
        self.scheduler: LiveScheduler | None = None
        self.jobs: JobRunner | None = None
        self.recorder: TrafficRecorder | None = None
        #: the gateway's doors (gRPC, HTTP; in worker processes with ``gateway.workers`` > 1)
        self.doors = FrontDoors(settings, self.fleet)
        self.admin = AdminServer(self)
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    # -- the first instance, as before there were fleets (admin views, tests, benches) -----
    @property
    def runtime(self) -> InstanceRuntime:
        """The first instance; TritonUnavailable when the fleet has none (all removed)."""
        order = self.fleet.order
        if not order:
            raise TritonUnavailable("no Triton instance in the fleet: "
                                    "add one (POST /instances)")
        return order[0]

    @property
    def manager(self) -> ModelManager | None:
        return self.runtime.manager

    @property
    def instance(self) -> TritonInstance | None:
        return self.runtime.instance

    @property
    def supervisor(self) -> TritonSupervisor | None:
        return self.runtime.supervisor

    @property
    def probe(self) -> WarmupProbe | None:
        return self.runtime.probe

    # -- the doors and the admin API (front_doors.py, admin/server.py) ---------------------
    @property
    def gateway(self) -> Gateway | None:
        return self.doors.gateway

    @property
    def workers(self) -> GatewayWorkers | None:
        return self.doors.workers

    @property
    def gateway_url(self) -> str | None:
        """``host:port`` of the gRPC door; None before it opens."""
        return self.doors.grpc_url

    @property
    def gateway_http_url(self) -> str | None:
        """``http://host:port`` of the HTTP door; None when it is off."""
        return self.doors.http_url

    @property
    def admin_url(self) -> str:
        return self.admin.url

    def _wire(self, rt: InstanceRuntime) -> None:
        """Every hook between the parts, for one instance's lifecycle (before it starts)."""
        manager = rt.manager
        assert manager is not None and rt.batch_stats is not None
        manager.before_unload.append(rt.batch_stats.collect)
        self.parts.wire(rt)
        if self.cluster is not None:
            self.cluster.wire(rt)
        if self.preparer is not None:
            # Triton refused a load carrying our warm-up: never apply that version again
            manager.additions_rejected.append(self.preparer.rejected)
        if self.cold_starts is not None:
            manager.after_load.append(self.cold_starts.observe)

        # a restore retried after a failure not the model's is a failing loop meanwhile
        manager.restore_retry.on_pass = rt.loops.reporter("restore")

    async def start(self, *, wait_pinned: bool = False) -> None:
        """Start everything. Pinned models load in the background unless ``wait_pinned``."""
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        unknown = [m for m in s.models if m not in self.repository]
        if unknown:
            log.warning("configured models not in %s: %s", s.model_repository, ", ".join(unknown))
        await self.database.run(self.database.migrate)
        self.store_health.start()
        if self.compile_cache is not None:
            await asyncio.to_thread(self.compile_cache.prune)
        stack = self._stack
        try:
            # the versions each model serves, before any load pins them
            await self.versions.start()
            # instances start together (each embedded tritonserver takes seconds), each on
            # its own exit stack; closed last, after everything that uses them
            await self.parts.start(stack)
            if self.cluster is None:  # a replica's leader resumes them (``cluster/role.py``)
                await self.rollouts.start()
            stack.push_async_callback(self.rollouts.close)
            self._tasks.append(asyncio.create_task(self.loops.every(
                "rollouts", min(DETECT_S, s.triton.reconcile_interval_s),
                self.parts.leading(self.rollouts.detect)),
                name="rollouts"))
            self.readiness.manager = self.readiness.supervisor = self.fleet
            if self.preparer is not None:
                fleet = self.fleet
                self.drift = DriftWatcher(manager=fleet, preparer=self.preparer,
                                          batch_stats=FleetBatchStats(fleet),
                                          options=s.warmup)
                self._tasks.append(asyncio.create_task(self.loops.every(
                    "warmup-drift", s.warmup.drift_check_interval_s, self.drift.check),
                    name="warmup-drift"))
            if s.traffic.enabled:
                self.recorder = build_recorder(s, self.traffic, self.repository)
                self.recorder.on_pass = self.loops.reporter("traffic-flush")
                # each request's outcome, per replica: a ramping one is compared to its peers
                self.recorder.on_observation.append(self.ramp.observation)
                self.recorder.on_observation.append(self.load_watch.observation)
                self.recorder.on_observation.append(self.rollouts.watch.observation)
                # a replica that answered real traffic well needs no health probe
                self.recorder.on_observation.append(self.parts.health.observation)
                await self.recorder.start()
            spawn_all(self.parts.loops(self.loops), self._tasks)
            if s.gateway.enabled:
                await self.doors.start(self.recorder, lambda: self.readiness.ready,
                                       self.parts.wiring.upstream_error)
            if s.scheduler.enabled and self.cluster is None:
                await self.start_scheduler()
            await self.admin.start()
            log.info("admin API on %s", self.admin.url)
            if self.cluster is not None:  # the leader starts the scheduler and pinned loads
                await self.cluster.start()
        except BaseException:
            await self.stop()
            raise
        if self.cluster is not None:
            return
        warm = asyncio.create_task(self._warm_pinned(), name="warm-pinned")
        self._tasks.append(warm)
        if wait_pinned:
            await warm

    def _device(self, model: ModelName) -> Level | None:
        return self.scheduler.device(model) if self.scheduler else None

    async def start_scheduler(self) -> None:
        """The scheduler and its jobs (``fleet/assembly.py``); a cluster's leader
        starts them when it comes to lead."""
        self.scheduler, self.jobs = await self.parts.start_scheduler(
            self.traffic, self.database, self.loops, cold_starts=self.cold_starts,
            recorder=self.recorder)

    async def _warm_pinned(self) -> None:
        self.readiness.pinned_failures = await warm_pinned(self.fleet)
        for name, error in self.readiness.pinned_failures.items():
            log.error("pinned model %s did not load: %s", name, error)
        self.readiness.pinned_done = True
        if self.scheduler is not None:
            self.scheduler.pins_settled = True
        log.info("pinned models warm: %s", self.fleet.pinned or "none configured")

    async def stop(self) -> None:
        """Stop in reverse order. Loaded models stay loaded in an external Triton.

        No restart or restore while we stop (supervisors first); the gateway drains in-flight
        requests; everything recorded is flushed; then each instance unwinds its exit stack.
        """
        if self.cluster is not None:  # the lease first: another replica leads at once
            await bounded("the leadership", self.cluster.close(), 10)
        for rt in self.fleet.order:
            if rt.supervisor is not None:
                await bounded(f"the supervisor of {rt.name}", rt.supervisor.close(), 15)
        if self.jobs is not None:
            await bounded("the scheduler's jobs", self.jobs.stop(), 10)
        await self.doors.stop()  # each draining its in-flight requests
        if self.recorder is not None:
            # hands the buffer to the write-behind (written at the end, bounded)
            await bounded("the traffic recorder's final flush", self.recorder.stop(), 30)
        if self.scheduler is not None:  # after the final flush, which it listens to
            await bounded("the scheduler", self.scheduler.close(), 30)
        await self.admin.stop()
        for task in self._tasks:
            task.cancel()
        await bounded("the background tasks",
                       asyncio.gather(*self._tasks, return_exceptions=True), 15)
        self._tasks.clear()
        await self._stack.aclose()
        await self.store_health.close()
        # what is still queued is written within a bound; the rest is counted and logged
        await self.database.aclose(self.settings.store.stop_flush_s)

    async def run_forever(self) -> None:
        """``serve``: start, then run until cancelled (SIGINT/SIGTERM)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
