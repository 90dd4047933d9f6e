"""The composition root: builds every part from Settings, starts and stops them in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field

import uvicorn

from controlplane.config import Settings
from controlplane.errors import ConfigError, ControlPlaneError
from controlplane.gateway.server import Gateway
from controlplane.lifecycle.manager import LoadPreparer, ModelManager
from controlplane.scheduler.driver import LiveScheduler
from controlplane.scheduler.jobs import JobRunner
from controlplane.scheduler.levels import Level
from controlplane.scheduler.placing import PlacingPreparer
from controlplane.store.database import Database
from controlplane.store.lifecycle import LifecycleStore
from controlplane.traffic.recorder import PayloadSampler, TrafficRecorder
from controlplane.traffic.store import Retention, TrafficStore
from controlplane.triton.instance import TritonInstance
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName
from controlplane.warmup.batch_stats import BatchStatsTracker
from controlplane.warmup.configs import WarmupStore
from controlplane.warmup.drift import DriftWatcher
from controlplane.warmup.preparer import WarmupPreparer
from controlplane.warmup.probe import WarmupProbe

log = logging.getLogger(__name__)


@dataclass
class Readiness:
    """Whether the control plane may take traffic: pinned models loaded, Triton live."""

    pinned_done: bool = False
    pinned_failures: dict[ModelName, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.pinned_done and not self.pinned_failures


class ControlPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = Database(settings.db_url)
        self.repository = ModelRepository(settings.model_repository)
        self.readiness = Readiness()
        self.instance: TritonInstance | None = None
        self.manager: ModelManager | None = None
        self.traffic: TrafficStore | None = None
        self.warmups = WarmupStore(self.database)
        self.preparer: WarmupPreparer | None = None
        self.probe: WarmupProbe | None = None
        self.drift: DriftWatcher | None = None
        self.scheduler: LiveScheduler | None = None
        self.jobs: JobRunner | None = None
        self.recorder: TrafficRecorder | None = None
        self.gateway: Gateway | None = None
        self.admin_port: int | None = None
        self._admin: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, wait_pinned: bool = False) -> None:
        """Start everything. Pinned models load in the background unless ``wait_pinned``."""
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        unknown = [m for m in s.models if m not in self.repository]
        if unknown:
            log.warning("configured models not in %s: %s", s.model_repository, ", ".join(unknown))
        await self.database.run(self.database.migrate)
        self.instance = await TritonInstance.from_settings(s)
        try:
            self.traffic = TrafficStore(self.database, self.instance.name)
            batch_stats = BatchStatsTracker(self.instance.client, self.warmups)
            if s.warmup.enabled:
                self.preparer = WarmupPreparer(repository=self.repository, warmups=self.warmups,
                                               traffic=self.traffic, options=s.warmup)
                self.probe = WarmupProbe(preparer=self.preparer, client=self.instance.client,
                                         options=s.warmup.probe, batch_stats=batch_stats)
            preparer: LoadPreparer | None = self.preparer
            if s.scheduler.enabled:
                preparer = PlacingPreparer(self.preparer, self.repository, self._device)
            self.manager = ModelManager(
                instance=self.instance,
                repository=self.repository,
                store=LifecycleStore(self.database, self.instance.name),
                pinned=[m for m in s.pinned_models() if m in self.repository],
                preparer=preparer,
                probe=self.probe,
                retry_failed_after_s=s.gateway.retry_failed_load_after_s,
            )
            self.manager.before_unload.append(batch_stats.collect)
            await self.manager.start()
            self._tasks.append(asyncio.create_task(
                self.manager.keep_reconciling(s.triton.reconcile_interval_s), name="reconcile"))
            if self.preparer is not None:
                self.drift = DriftWatcher(manager=self.manager, preparer=self.preparer,
                                          batch_stats=batch_stats, options=s.warmup)
                self._tasks.append(asyncio.create_task(self.drift.run(), name="warmup-drift"))
            if s.traffic.enabled:
                self.recorder = self._make_recorder(self.traffic)
                await self.recorder.start()
            if s.gateway.enabled:
                self.gateway = Gateway(
                    manager=self.manager,
                    recorder=self.recorder,
                    upstream_url=self.instance.grpc_url,
                    default_deadline_s=s.gateway.default_deadline_s,
                    call_timeout_s=s.triton.call_timeout_s,
                    allow_repository_control=s.gateway.allow_repository_control,
                    ready=lambda: self.readiness.ready,
                )
                port = await self.gateway.start(s.gateway.host, s.gateway.port)
                log.info("inference gateway on %s:%d", s.gateway.host, port)
            if s.scheduler.enabled:
                await self._start_scheduler()
            await self._start_admin()
        except BaseException:
            await self.stop()
            raise
        warm = asyncio.create_task(self._warm_pinned(), name="warm-pinned")
        self._tasks.append(warm)
        if wait_pinned:
            await warm

    def _device(self, model: ModelName) -> Level:
        return self.scheduler.device(model) if self.scheduler else Level.CPU

    async def _start_scheduler(self) -> None:
        assert self.manager is not None and self.traffic is not None
        s = self.settings
        self.scheduler = LiveScheduler(manager=self.manager, traffic=self.traffic,
                                       options=s.scheduler)
        await self.scheduler.start()
        if self.recorder is not None:
            self.recorder.listeners.append(self.scheduler.observe)
        self.jobs = JobRunner(self.scheduler, engine=self.database.engine,
                              instance=s.instance_name, rules=s.scheduler.rules)
        await self.jobs.start()

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
        )

    @property
    def gateway_url(self) -> str | None:
        if self.gateway is None or self.gateway.port is None:
            return None
        return f"{self.settings.gateway.host}:{self.gateway.port}"

    async def _warm_pinned(self) -> None:
        assert self.manager is not None
        self.readiness.pinned_failures = await self.manager.warm_pinned()
        self.readiness.pinned_done = True
        if self.scheduler is not None:
            self.scheduler.pins_settled = True
        log.info("pinned models warm: %s", self.manager.pinned or "none configured")

    async def _start_admin(self) -> None:
        from controlplane.admin.app import create_admin_app

        config = uvicorn.Config(create_admin_app(self), log_level="warning", lifespan="off",
                                access_log=False)
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

        The gateway drains in-flight requests first, then everything recorded is flushed.
        """
        if self.jobs is not None:
            await self.jobs.stop()
        if self.gateway is not None:
            await self.gateway.stop(self.settings.gateway.grace_s)
        if self.recorder is not None:
            try:
                await self.recorder.stop()
            except Exception:
                log.exception("final traffic flush failed")
        if self.scheduler is not None:  # after the final flush, which it listens to
            await self.scheduler.close()
        if self._admin is not None:
            self._admin.should_exit = True
        for task in self._tasks:
            if task.get_name() != "admin":
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.manager is not None:
            await self.manager.close()
        if self.probe is not None:
            await self.probe.close()
        if self.instance is not None:
            try:
                await self.instance.close()
            except ControlPlaneError as exc:
                log.warning("stopping Triton: %s", exc)
        self.database.close()

    async def run_forever(self) -> None:
        """``serve``: start, then run until cancelled (SIGINT/SIGTERM)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
