"""The composition root: builds every part from Settings, starts and stops them in order.

Build, then start: the fleet (one :class:`InstanceRuntime` per Triton instance) and every
component are built first; starting pushes each one's ``close`` on an ``AsyncExitStack``,
so ``stop`` unwinds in reverse order by construction. All hook wiring is in ``_wire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Sequence

import uvicorn
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent

from controlplane.admin.auth import gateway_guard
from controlplane.cluster.role import ClusterRole, store_scope
from controlplane.compile_cache.cold_start import ColdStarts
from controlplane.compile_cache.store import CompileCacheStore
from controlplane.config import Settings
from controlplane.errors import ConfigError, TritonUnavailable
from controlplane.fleet.assembly import FleetParts, spawn_all
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.pinned import warm_pinned
from controlplane.fleet.replicas import FleetReplicas
from controlplane.fleet.runtime import InstanceRuntime, Shared
from controlplane.gateway.rest import RestGateway
from controlplane.gateway.server import Gateway
from controlplane.gateway.workers.start import claim_port, worker_config, worker_count
from controlplane.gateway.workers.supervisor import GatewayWorkers
from controlplane.lifecycle.manager import LoadPreparer, ModelManager
from controlplane.lifecycle.recovery import signals_lost
from controlplane.lifecycle.states import ModelState
from controlplane.loops import Loops
from controlplane.readiness import Readiness
from controlplane.rollouts.controller import DETECT_S, Rollouts
from controlplane.rollouts.verify import Verdict, VerifyOptions, samples_for, verify_version
from controlplane.rollouts.versions import ModelVersions, VersionPreparer
from controlplane.scheduler.driver import LiveScheduler
from controlplane.scheduler.jobs import JobRunner
from controlplane.scheduler.levels import Level
from controlplane.scheduler.placing import PlacingPreparer
from controlplane.store.database import Database
from controlplane.store.health import StoreHealth
from controlplane.store.instances import InstanceStore
from controlplane.store.rollouts import RolloutStore
from controlplane.traffic.admission import DeclaredInputs
from controlplane.traffic.ranges import RangeSampler
from controlplane.traffic.recorder import PayloadSampler, TrafficRecorder
from controlplane.traffic.store import Retention, TrafficStore
from controlplane.triton.instance import TritonInstance
from controlplane.triton.repository import ModelRepository
from controlplane.triton.supervisor import TritonSupervisor
from controlplane.types import ModelName
from controlplane.warmup.configs import WarmupStore
from controlplane.warmup.drift import DriftWatcher
from controlplane.warmup.preparer import WarmupPreparer
from controlplane.warmup.probe import WarmupProbe

log = logging.getLogger(__name__)

#: how often replicas are checked against the measured load (s)
FOLLOW_LOAD_S = 5.0


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
                                 verifier=self._verify_version)
        self.drift: DriftWatcher | None = None
        self.scheduler: LiveScheduler | None = None
        self.jobs: JobRunner | None = None
        self.recorder: TrafficRecorder | None = None
        self.gateway: Gateway | None = None
        self.rest: RestGateway | None = None
        #: the gateway's worker processes (``gateway.workers`` > 1), and the public ports
        self.workers: GatewayWorkers | None = None
        self.gateway_port: int | None = None
        self.gateway_http_port: int | None = None
        self.admin_port: int | None = None
        self._admin: uvicorn.Server | None = None
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
        manager.restore_retry.on_pass = lambda error: (
            rt.loops.ok("restore") if error is None else rt.loops.failed("restore", error))

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
                                          batch_stats=_BatchStats(fleet),
                                          options=s.warmup)
                self._tasks.append(asyncio.create_task(self.loops.every(
                    "warmup-drift", s.warmup.drift_check_interval_s, self.drift.check),
                    name="warmup-drift"))
            if s.traffic.enabled:
                self.recorder = self._make_recorder(self.traffic)
                self.recorder.on_pass = self._flush_pass
                # each request's outcome, per replica: a ramping one is compared to its peers
                self.recorder.on_observation.append(self.ramp.observation)
                self.recorder.on_observation.append(self.load_watch.observation)
                self.recorder.on_observation.append(self.rollouts.watch.observation)
                # a replica that answered real traffic well needs no health probe
                self.recorder.on_observation.append(self.parts.health.observation)
                await self.recorder.start()
            spawn_all(self.parts.loops(self.loops), self._tasks)
            if s.gateway.enabled:
                self.gateway = Gateway(
                    models=self.fleet,
                    recorder=self.recorder,
                    default_deadline_s=s.gateway.default_deadline_s,
                    call_timeout_s=s.triton.call_timeout_s,
                    allow_repository_control=s.gateway.allow_repository_control,
                    ready=lambda: self.readiness.ready,
                    upstream_error=self._upstream_error,
                    max_request_bytes=s.gateway.max_request_bytes,
                    max_buffered_bytes=s.gateway.max_buffered_bytes,
                    expose_tracebacks=s.gateway.expose_tracebacks,
                    guard=gateway_guard(s),
                )
                await self._start_front_doors()
            if s.scheduler.enabled and self.cluster is None:
                await self._start_scheduler()
            await self._start_admin()
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

    async def _start_front_doors(self) -> None:
        """The gateway's doors: in this process, or (``gateway.workers`` > 1) in worker
        processes on the public ports, this process's gateway on loopback behind them."""
        s, gateway = self.settings, self.gateway
        assert gateway is not None
        count = worker_count(s.gateway.workers)
        if count == 1:
            self.gateway_port = await gateway.start(s.gateway.host, s.gateway.port)
            log.info("inference gateway on %s:%d", s.gateway.host, self.gateway_port)
            if s.gateway.http_enabled:
                self.rest = RestGateway(gateway)
                self.gateway_http_port = await self.rest.start(s.gateway.host,
                                                               s.gateway.http_port)
                log.info("inference gateway (HTTP) on http://%s:%d", s.gateway.host,
                         self.gateway_http_port)
            return
        grpc_port = claim_port(s.gateway.host, s.gateway.port, "gateway.port")
        http_port = claim_port(s.gateway.host, s.gateway.http_port, "gateway.http_port") \
            if s.gateway.http_enabled else None
        assert isinstance(gateway.replicas, FleetReplicas)
        internal = await gateway.start("127.0.0.1", 0)
        internal_http = None
        if s.gateway.http_enabled:
            self.rest = RestGateway(gateway)
            internal_http = f"http://127.0.0.1:{await self.rest.start('127.0.0.1', 0)}"
        self.workers = GatewayWorkers(
            count, lambda i: worker_config(
                s, i, count, grpc_port, http_port, f"127.0.0.1:{internal}", internal_http,
                gateway.buffered.max_buffered_bytes),
            self.fleet, gateway.replicas, self.recorder)
        self.fleet.publish = self.workers.publish
        await self.workers.start()
        self.gateway_port, self.gateway_http_port = grpc_port, http_port
        log.info("inference gateway: %d worker processes on %s:%d (gRPC)%s", count,
                 s.gateway.host, grpc_port,
                 f" and :{http_port} (HTTP)" if http_port is not None else "")

    def _device(self, model: ModelName) -> Level | None:
        return self.scheduler.device(model) if self.scheduler else None

    async def _start_scheduler(self) -> None:
        s = self.settings
        # The GPU budget is what the GPUs have unless configured; refused without GPUs. The
        # policy sees the fleet as one budget: the serving instances' budgets summed, again
        # whenever the fleet changes (``fleet/budgets.py``).
        budgets = self.parts.budgets
        assert budgets is not None
        self.scheduler = LiveScheduler(manager=self.fleet, traffic=self.traffic,
                                       options=budgets.current())
        if self.cold_starts is not None:  # before start(): its first profiles use it
            self.scheduler.book.cold_start = self.cold_starts.expected_load_s
        await self.scheduler.start()
        self.parts.use_scheduler(self.scheduler)
        if self.recorder is not None:
            self.recorder.listeners.append(self.scheduler.observe)
        self.jobs = JobRunner(self.scheduler, database=self.database,
                              instance=s.instance_name, rules=s.scheduler.rules)
        self.jobs.aps.on_error = lambda exc: self.loops.failed("scheduler", f"wake-up: {exc}")
        await self.jobs.start()
        self.jobs.aps.add_listener(self._job_ran, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def _job_ran(self, event: JobExecutionEvent) -> None:
        """The scheduler's jobs report to ``/healthz`` as the loop ``scheduler``."""
        if event.exception is not None:
            self.loops.failed("scheduler", f"job {event.job_id}: {event.exception}")
        else:
            self.loops.ok("scheduler")

    async def _verify_version(self, rt: InstanceRuntime, model: ModelName, active: str,
                              target: str, options: VerifyOptions) -> Verdict:
        """A rollout's verification on ``rt``: recorded samples (or proven probe inputs)
        sent to both versions (``rollouts/verify.py``)."""
        assert rt.instance is not None
        spec = self.repository.spec(model)
        samples = await samples_for(model, spec, self.traffic, self.warmups,
                                    options.max_samples)
        return await verify_version(rt.instance.client, model, active, target, samples, spec,
                                    options)

    def _upstream_error(self, instance: str, model: ModelName, status: str,
                        message: str) -> None:
        """Triton failed a request the gateway forwarded (``status``: gRPC status name):
        that Triton itself may be gone (probe it now), or it lost the model (check, reload)."""
        rt = self.fleet.runtimes.get(instance)
        if rt is None:
            return
        self.crashes.request_failed(instance, model, status)
        if rt.supervisor is not None and status == "UNAVAILABLE":
            rt.supervisor.poke()
        if rt.manager is not None and signals_lost(status, message):
            rt.manager.model_lost(model, message)

    def _flush_pass(self, error: BaseException | None) -> None:
        if error is None:
            self.loops.ok("traffic-flush")
        else:
            self.loops.failed("traffic-flush", error)

    def _make_recorder(self, store: TrafficStore) -> TrafficRecorder:
        t = self.settings.traffic
        sampled = self.settings.sampled_models()
        sampler = PayloadSampler(
            sampled, per_shape=t.sample_per_shape, max_sample_bytes=t.sample_max_bytes,
            max_model_bytes=t.sample_max_model_bytes) if sampled else None
        return TrafficRecorder(
            store,
            flush_interval_s=t.flush_interval_s,
            max_buffer=t.max_buffer,
            retention=Retention(
                requests_s=t.request_retention_h * 3600,
                usage_s=t.usage_retention_days * 86400,
                shapes_s=t.shape_retention_days * 86400,
                samples_s=t.sample_retention_days * 86400),
            sampler=sampler,
            ranges=RangeSampler(t.range_sample_every),
            # known models and their declared inputs only (traffic/admission.py)
            declared=DeclaredInputs(
                self.repository.names,
                lambda model: (i.name for i in self.repository.spec(model).inputs)),
        )

    @property
    def gateway_http_url(self) -> str | None:
        """``http://host:port`` of the HTTP door; None when it is off."""
        if self.gateway_http_port is None:
            return None
        return f"http://{self.settings.gateway.host}:{self.gateway_http_port}"

    @property
    def gateway_url(self) -> str | None:
        if self.gateway_port is None:
            return None
        return f"{self.settings.gateway.host}:{self.gateway_port}"

    async def _warm_pinned(self) -> None:
        self.readiness.pinned_failures = await warm_pinned(self.fleet)
        for name, error in self.readiness.pinned_failures.items():
            log.error("pinned model %s did not load: %s", name, error)
        self.readiness.pinned_done = True
        if self.scheduler is not None:
            self.scheduler.pins_settled = True
        log.info("pinned models warm: %s", self.fleet.pinned or "none configured")

    async def _start_admin(self) -> None:
        from controlplane.admin.app import create_admin_app

        # log_config=None: uvicorn's records go through warmctl's handler ([log] format)
        config = uvicorn.Config(create_admin_app(self), log_level="warning", lifespan="off",
                                access_log=False, log_config=None)
        self._admin = uvicorn.Server(config)
        # Bound here rather than by uvicorn, so port 0 works and the real port is known.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = (self.settings.admin.host, self.settings.admin.port)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"admin API cannot listen on {address[0]}:{address[1]}: "
                              f"{exc.strerror}") from None
        self.admin_port = int(sock.getsockname()[1])
        self._tasks.append(asyncio.create_task(self._admin.serve(sockets=[sock]), name="admin"))
        while not self._admin.started:  # noqa: ASYNC110  (uvicorn exposes only a flag)
            await asyncio.sleep(0.01)
        log.info("admin API on http://%s:%d", self.settings.admin.host, self.admin_port)

    @property
    def admin_url(self) -> str:
        return f"http://{self.settings.admin.host}:{self.admin_port}"

    async def stop(self) -> None:
        """Stop in reverse order. Loaded models stay loaded in an external Triton.

        No restart or restore while we stop (supervisors first); the gateway drains in-flight
        requests; everything recorded is flushed; then each instance unwinds its exit stack.
        """
        grace = self.settings.gateway.grace_s
        if self.cluster is not None:  # the lease first: another replica leads at once
            await _bounded("the leadership", self.cluster.close(), 10)
        for rt in self.fleet.order:
            if rt.supervisor is not None:
                await _bounded(f"the supervisor of {rt.name}", rt.supervisor.close(), 15)
        if self.jobs is not None:
            await _bounded("the scheduler's jobs", self.jobs.stop(), 10)
        if self.workers is not None:  # first: they forward to the gateway below
            await _bounded("the gateway workers", self.workers.stop(grace), grace + 20)
        if self.rest is not None:
            await _bounded("the HTTP door", self.rest.stop(grace), grace + 10)
        if self.gateway is not None:
            await _bounded("the gRPC door", self.gateway.stop(grace), grace + 10)
        if self.recorder is not None:
            # hands the buffer to the write-behind (written at the end, bounded)
            await _bounded("the traffic recorder's final flush", self.recorder.stop(), 30)
        if self.scheduler is not None:  # after the final flush, which it listens to
            await _bounded("the scheduler", self.scheduler.close(), 30)
        if self._admin is not None:
            self._admin.should_exit = True
        for task in self._tasks:
            if task.get_name() != "admin":
                task.cancel()
        await _bounded("the background tasks and the admin API",
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


class _BatchStats:
    """Drift's batch statistics, from every instance the model is ready on."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def collect_all(self, models: Sequence[ModelName]) -> None:
        wanted = set(models)
        for rt, manager in self.fleet.managers():
            if rt.batch_stats is not None:
                await rt.batch_stats.collect_all(
                    [s.name for s in manager.statuses()
                     if s.name in wanted and s.state is ModelState.READY])


async def _bounded(what: str, step: Awaitable[object], limit_s: float) -> None:
    """One step of a stop, bounded: a stop never hangs on one part (the log names it)."""
    try:
        await asyncio.wait_for(step, limit_s)
    except TimeoutError:
        log.warning("stopping: %s did not finish within %gs; going on", what, limit_s)
    except Exception:
        log.exception("stopping: %s failed; going on", what)
