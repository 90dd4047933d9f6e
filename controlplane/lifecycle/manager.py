"""The lifecycle of every model on one Triton instance.

The in-memory state here is what the gateway's hot path reads; SQLite gets every transition
and a record of every load and unload. Operations on one model are serialized by its lock;
concurrent load requests share one in-flight load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controlplane.errors import (
    Conflict,
    ControlPlaneError,
    DeadlineExceeded,
    ModelLoadFailed,
    ModelNotFound,
)
from controlplane.lifecycle.states import LoadPlan, ModelState, ModelStatus, state_from_index
from controlplane.store.base import utcnow
from controlplane.store.lifecycle import EventOutcome, LifecycleStore
from controlplane.triton.instance import TritonInstance
from controlplane.triton.repository import ModelRepository, ModelSpec
from controlplane.types import ModelName

log = logging.getLogger(__name__)


class LoadPreparer(Protocol):
    """Decides what a load sends to Triton (the warm-up issue plugs in here)."""

    async def prepare(self, spec: ModelSpec) -> LoadPlan: ...


class ReadinessProbe(Protocol):
    """Runs after Triton reports a model ready and before we route to it; returns details."""

    async def probe(self, spec: ModelSpec) -> dict[str, Any]: ...


@dataclass(eq=False)
class _Model:
    name: ModelName
    state: ModelState
    reason: str | None
    since: Any
    pinned: bool
    memory_bytes: int | None = None
    load_s: float | None = None
    #: monotonic time of the last failed load (lazy loads back off from it)
    failed_at: float = float("-inf")
    #: the last load failed on our timeout, not in Triton: Triton's verdict is still to come
    timed_out: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    load_task: asyncio.Task[None] | None = None


class ModelManager:
    def __init__(
        self,
        *,
        instance: TritonInstance,
        repository: ModelRepository,
        store: LifecycleStore,
        pinned: list[ModelName] | None = None,
        preparer: LoadPreparer | None = None,
        probe: ReadinessProbe | None = None,
        load_timeout_s: float | None = None,
        retry_failed_after_s: float = 30.0,
    ) -> None:
        self.instance = instance
        self.client = instance.client
        self.repository = repository
        self.store = store
        self.pinned = list(pinned or [])
        self.preparer = preparer
        self.probe = probe
        self.load_timeout_s = load_timeout_s or instance.client.load_timeout_s
        self.retry_failed_after_s = retry_failed_after_s
        self._models: dict[ModelName, _Model] = {}
        self._followers: dict[ModelName, asyncio.Task[None]] = {}
        #: called with (model, new state) after every transition; keep it cheap
        self.listeners: list[Callable[[ModelName, ModelState], None]] = []
        #: awaited before a model is unloaded (e.g. to save Triton's statistics)
        self.before_unload: list[Callable[[ModelName], Awaitable[object]]] = []
        #: awaited with (model, trigger) once a load has begun, before Triton is asked (e.g.
        #: to unload others and make room); the model is ``loading`` by then
        self.before_load: list[Callable[[ModelName, str], Awaitable[object]]] = []

    # -- reading ----------------------------------------------------------------------------
    def _model(self, name: ModelName) -> _Model:
        model = self._models.get(name)
        if model is None:
            if name in self.repository:  # added to the repository since start-up
                row = self.store.sync_models([name], self.pinned,
                                             initial_state=ModelState.COLD)[name]
                model = _Model(name, ModelState.COLD, None, row.state_since, name in self.pinned)
                self._models[name] = model
            else:
                raise ModelNotFound(name)
        return model

    def ready_now(self, name: ModelName) -> bool:
        """The gateway's hot-path check: one dict lookup, no exceptions."""
        model = self._models.get(name)
        return model is not None and model.state is ModelState.READY

    def state(self, name: ModelName) -> ModelState:
        return self._model(name).state

    def status(self, name: ModelName) -> ModelStatus:
        m = self._model(name)
        busy = m.lock.locked() or m.load_task is not None
        return ModelStatus(m.name, self.instance.name, m.state, m.reason, m.since, m.pinned,
                           m.memory_bytes, m.load_s, busy)

    def statuses(self) -> list[ModelStatus]:
        for name in self.repository.names(refresh=True) - self._models.keys():
            self._model(name)
        return [self.status(name) for name in sorted(self._models)]

    # -- start-up ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Load our records, then make them agree with what Triton really has loaded."""
        names = sorted(self.repository.names(refresh=True))
        rows = await self.store.db.run(self.store.sync_models, names, self.pinned,
                                       initial_state=ModelState.COLD)
        closed = await self.store.db.run(
            self.store.close_dangling_events, "control plane stopped during the operation")
        if closed:
            log.warning("closed %d load/unload records left open by a previous run", closed)
        for name in names:
            row = rows[name]
            self._models[name] = _Model(name, ModelState(row.state), row.reason, row.state_since,
                                        row.pinned, row.memory_bytes, row.load_s)
        await self.reconcile()

    async def reconcile(self) -> dict[ModelName, tuple[ModelState, ModelState]]:
        """Align idle models with Triton's index; returns {model: (was, now)} for changes."""
        observed_at = utcnow()
        by_model: dict[ModelName, list[Any]] = {}
        for entry in await self.client.index():
            by_model.setdefault(entry.name, []).append(entry)
        changes = {}
        for name, model in self._models.items():
            seen, reason = state_from_index(by_model.get(name, []))
            was = model.state
            if await self._adopt(model, seen, reason or f"found {seen} in Triton at reconcile",
                                 observed_at):
                changes[name] = (was, seen)
                if seen in (ModelState.LOADING, ModelState.UNLOADING):
                    self._follow(name)
        if changes:
            log.info("reconciled with Triton: %s",
                     ", ".join(f"{n} {a}->{b}" for n, (a, b) in changes.items()))
        return changes

    async def keep_reconciling(self, interval_s: float) -> None:
        """Reconcile every ``interval_s``: a load that outlived our timeout and finished in
        Triton after all, models loaded or unloaded behind our back, a Triton that lost them."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reconcile()
            except ControlPlaneError as exc:
                log.warning("reconcile with Triton failed: %s", exc)

    async def _adopt(self, model: _Model, seen: ModelState, reason: str | None,
                     observed_at: datetime) -> bool:
        """Take Triton's view, observed at ``observed_at``, of a model we are not operating on.
        Returns whether our state changed."""
        if model.lock.locked() or model.load_task is not None or model.since > observed_at:
            return False  # an operation of ours is in flight, or changed the state since
        if seen == model.state:
            if seen is ModelState.FAILED and model.timed_out and reason:
                # the load we gave up on failed in Triton after all: its reason says why
                await self._set(model, seen, f"{reason} (after our load timed out)")
                return True
            return False
        if model.state is ModelState.FAILED and seen in (ModelState.COLD, ModelState.LOADING):
            # Triton forgets failures it did not record in the index; and a load of ours that
            # timed out goes on in Triton (LOADING): the failure, and the retry back-off of
            # lazy loads, stand until Triton settles it
            return False
        await self._set(model, seen, reason)
        return True

    def _follow(self, name: ModelName) -> None:
        """Watch a load or unload that Triton is doing without us (someone else started it, or
        ours timed out and Triton went on) until Triton settles it. No deadline of its own: a
        hung load is polled ever more slowly (at most every 5 s) for as long as Triton reports
        it; while an operation of ours runs on the model, its outcome is the one that counts."""
        if name in self._followers:
            return

        async def follow() -> None:
            pause = 0.5
            model = self._models[name]
            while True:
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, 5.0)
                with contextlib.suppress(ControlPlaneError):
                    observed_at = utcnow()
                    seen, reason = state_from_index(await self.client.model_index(name))
                    if seen not in (ModelState.LOADING, ModelState.UNLOADING):
                        await self._adopt(model, seen, reason or f"{seen} in Triton after all",
                                          observed_at)
                        return

        task = asyncio.create_task(follow(), name=f"follow-{name}")
        self._followers[name] = task
        task.add_done_callback(lambda _: self._followers.pop(name, None))

    async def warm_pinned(self) -> dict[ModelName, str]:
        """Load pinned models one by one, highest priority first. Returns failures."""
        failures = {}
        for name in self.pinned:
            try:
                await self.load(name, trigger="startup")
            except ControlPlaneError as exc:
                failures[name] = str(exc)
                log.error("pinned model %s did not load: %s", name, exc)
        return failures

    # -- operations -------------------------------------------------------------------------
    async def ensure_ready(self, name: ModelName, *, trigger: str = "gateway") -> None:
        """Lazy load for a request: start or join the model's load and wait for it.

        A model whose last load failed less than ``retry_failed_after_s`` ago fails at once
        with that reason, so a broken model does not make every request wait for a doomed
        load; the next request after that window tries again.
        """
        model = self._model(name)
        if model.state is ModelState.READY:
            return
        if (model.state is ModelState.FAILED and model.load_task is None
                and time.monotonic() - model.failed_at < self.retry_failed_after_s):
            raise ModelLoadFailed(name, model.reason or "unknown reason")
        await self.load(name, trigger=trigger)

    async def load(self, name: ModelName, *, trigger: str = "api") -> ModelStatus:
        """Load ``name`` (no-op when ready). Concurrent callers share one load.

        A caller that gives up (cancelled, deadline) does not cancel the load for the others.
        """
        model = self._model(name)
        if model.state == ModelState.READY and model.load_task is None:
            return self.status(name)
        task = model.load_task
        if task is None:
            task = asyncio.create_task(self._load(model, trigger), name=f"load-{name}")
            model.load_task = task
            task.add_done_callback(lambda t: self._load_done(model, t))
        await asyncio.shield(task)
        return self.status(name)

    @staticmethod
    def _load_done(model: _Model, task: asyncio.Task[None]) -> None:
        if model.load_task is task:
            model.load_task = None
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have given up already

    async def _load(self, model: _Model, trigger: str) -> None:
        async with model.lock:
            if model.state == ModelState.READY:
                return  # loaded by whoever held the lock before us
            started, t0 = utcnow(), time.monotonic()
            event_id = await self.store.db.run(
                self.store.begin_event, model.name, "load", trigger, started)
            await self._set(model, ModelState.LOADING, f"load requested by {trigger}")
            for hook in self.before_load:
                try:
                    await hook(model.name, trigger)
                except ControlPlaneError as exc:
                    log.warning("before-load hook for %s: %s", model.name, exc)
            details: dict[str, Any] = {}
            try:
                triton_s, memory = await self._bring_up(model, details, mark_warming=True)
            except BaseException as exc:
                reason = self._reason(model.name, exc)
                outcome = "timeout" if isinstance(exc, DeadlineExceeded) else "failed"
                await asyncio.shield(self._record_failure(
                    model, event_id, outcome, reason, details.get("triton_s"), details))
                if outcome == "timeout":
                    self._follow(model.name)  # Triton goes on loading: take its outcome
                if isinstance(exc, ControlPlaneError):
                    raise ModelLoadFailed(model.name, reason) from exc
                raise
            load_s = time.monotonic() - t0
            model.memory_bytes, model.load_s = memory or model.memory_bytes, load_s
            await self._set(model, ModelState.READY, None, memory_bytes=memory, load_s=load_s)
            await self.store.db.run(self.store.finish_event, event_id, EventOutcome(
                "ok", triton_s=triton_s, memory_bytes=memory, details=details), utcnow())

    async def reload(self, name: ModelName, *, trigger: str = "api") -> ModelStatus:
        """Load ``name`` again (a new warm-up config, say) while the loaded one serves.

        Triton keeps the current instance serving until the new one is ready, and keeps it
        when the new one fails; the model stays ``ready`` throughout. A model that is not
        ready is simply loaded.
        """
        model = self._model(name)
        if model.state is not ModelState.READY:
            return await self.load(name, trigger=trigger)
        async with model.lock:
            t0 = time.monotonic()
            event_id = await self.store.db.run(
                self.store.begin_event, name, "reload", trigger, utcnow())
            model.reason = f"reloading (requested by {trigger}); the loaded instance serves"
            details: dict[str, Any] = {}
            try:
                triton_s, memory = await self._bring_up(model, details, mark_warming=False)
            except BaseException as exc:
                reason = self._reason(name, exc)
                with contextlib.suppress(ControlPlaneError):
                    seen, _ = state_from_index(await self.client.model_index(name))
                    if seen is ModelState.READY:
                        await self._set(model, ModelState.READY,
                                        f"reload failed, previous instance serving: {reason}")
                    else:
                        await self._record_failure(model, event_id, "failed", reason, None,
                                                   details)
                        raise ModelLoadFailed(name, reason) from exc
                await self.store.db.run(self.store.finish_event, event_id, EventOutcome(
                    "failed", error=reason, details=details or None), utcnow())
                raise ModelLoadFailed(name, reason) from exc
            load_s = time.monotonic() - t0
            model.memory_bytes, model.load_s = memory or model.memory_bytes, load_s
            await self._set(model, ModelState.READY, f"reloaded by {trigger}",
                            memory_bytes=memory, load_s=load_s)
            await self.store.db.run(self.store.finish_event, event_id, EventOutcome(
                "ok", triton_s=triton_s, memory_bytes=memory, details=details), utcnow())
        return self.status(name)

    async def _bring_up(self, model: _Model, details: dict[str, Any],
                        *, mark_warming: bool) -> tuple[float, int | None]:
        """Prepare, load in Triton, probe, measure. Fills ``details`` as it goes."""
        spec = self.repository.spec(model.name)
        plan = await self.preparer.prepare(spec) if self.preparer else LoadPlan()
        details.update(plan.details or {})
        t_call = time.monotonic()
        await self.client.load(model.name, config=plan.config, files=plan.files,
                               timeout_s=self.load_timeout_s)
        triton_s = details["triton_s"] = time.monotonic() - t_call
        if self.probe is not None:
            if mark_warming:
                await self._set(model, ModelState.WARMING, "probing before routing traffic")
            details.update(await self.probe.probe(spec))
        footprint = await self._footprint(model.name)
        details.update(footprint)
        return triton_s, footprint.get("rss_bytes")

    def _reason(self, name: ModelName, exc: BaseException) -> str:
        reason = _failure_reason(name, exc, self.load_timeout_s)
        detail = self.instance.failure_detail(name)
        return f"{reason} ({detail})" if detail and detail not in reason else reason

    async def _record_failure(self, model: _Model, event_id: int, outcome: str, reason: str,
                              triton_s: float | None, details: dict[str, Any]) -> None:
        log.warning("load of %s %s: %s", model.name, outcome, reason)
        model.failed_at = time.monotonic()
        await self._set(model, ModelState.FAILED, reason)
        model.timed_out = outcome == "timeout"
        await self.store.db.run(self.store.finish_event, event_id, EventOutcome(
            outcome, error=reason, triton_s=triton_s, details=details or None), utcnow())

    async def unload(self, name: ModelName, *, trigger: str = "api",
                     force: bool = False) -> ModelStatus:
        """Unload ``name`` and wait until Triton really released it. Idempotent."""
        model = self._model(name)
        if model.pinned and not force:
            raise Conflict(f"model '{name}' is pinned; unloading it needs force")
        async with model.lock:
            if model.state == ModelState.COLD:
                return self.status(name)
            event_id = await self.store.db.run(
                self.store.begin_event, name, "unload", trigger, utcnow())
            if model.state is ModelState.READY:
                for hook in self.before_unload:
                    try:
                        await hook(name)
                    except ControlPlaneError as exc:
                        log.warning("before-unload hook for %s: %s", name, exc)
            await self._set(model, ModelState.UNLOADING, f"unload requested by {trigger}")
            t_call = time.monotonic()
            try:
                await self.client.unload(name)
            except BaseException as exc:
                outcome = "timeout" if isinstance(exc, DeadlineExceeded) else "failed"
                with contextlib.suppress(ControlPlaneError):
                    seen, reason = state_from_index(await self.client.model_index(name))
                    await self._set(model, seen, reason or f"unload {outcome}: {exc}")
                await self.store.db.run(self.store.finish_event, event_id, EventOutcome(
                    outcome, error=str(exc), triton_s=time.monotonic() - t_call), utcnow())
                raise
            await self._set(model, ModelState.COLD, f"unloaded by {trigger}")
            await self.store.db.run(self.store.finish_event, event_id, EventOutcome(
                "ok", triton_s=time.monotonic() - t_call), utcnow())
        return self.status(name)

    async def close(self) -> None:
        """Stop watchers and wait for in-flight loads (their records must be finished)."""
        for task in list(self._followers.values()):
            task.cancel()
        loads = [m.load_task for m in self._models.values() if m.load_task is not None]
        for task in loads:
            task.cancel()
        await asyncio.gather(*self._followers.values(), *loads, return_exceptions=True)

    # -- internals --------------------------------------------------------------------------
    async def _set(self, model: _Model, state: ModelState, reason: str | None,
                   *, memory_bytes: int | None = None, load_s: float | None = None) -> None:
        now = utcnow()
        model.state, model.reason, model.since = state, reason, now
        model.timed_out = False
        await self.store.db.run(self.store.set_state, model.name, state.value, reason, at=now,
                                memory_bytes=memory_bytes, load_s=load_s)
        for listener in self.listeners:
            listener(model.name, state)

    async def _footprint(self, name: ModelName) -> dict[str, Any]:
        """The plugin's figures for a freshly loaded model; empty if they cannot be read."""
        if self.instance.metrics is None:
            return {}
        try:
            footprint = (await self.instance.metrics.footprints()).get(name)
        except ControlPlaneError as exc:
            log.warning("no plugin metrics for %s: %s", name, exc)
            return {}
        if footprint is None:
            return {}
        return {
            "instances": footprint.instances,
            "rss_bytes": footprint.rss_bytes,
            "cuda_allocated_bytes": footprint.cuda_allocated_bytes,
            "load_phases": footprint.load_phases,
        }


def _failure_reason(model: ModelName, exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, ModelLoadFailed):
        return exc.reason
    if isinstance(exc, DeadlineExceeded):
        return f"load did not finish within {timeout_s:g}s ({exc})"
    if isinstance(exc, asyncio.CancelledError):
        return "load cancelled (control plane stopping)"
    if isinstance(exc, ControlPlaneError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"
