"""The lifecycle of every model on one Triton instance.

The in-memory state here is what the gateway's hot path reads; SQLite gets every transition
and a record of every load and unload. Operations on one model are serialized by its lock;
concurrent load requests share one in-flight load. Triton is reached only through the
narrow :class:`~controlplane.lifecycle.port.TritonPort`; every state change goes through
``_set``, which checks it against the table in :mod:`controlplane.lifecycle.states`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from controlplane.errors import (
    Conflict,
    ControlPlaneError,
    DeadlineExceeded,
    HeldCold,
    ModelLoadFailed,
    ModelNotFound,
)
from controlplane.lifecycle.backoff import Backoff, BackoffPolicy
from controlplane.lifecycle.loading import BroughtUp, Loads, ready_reason
from controlplane.lifecycle.managed import ManagedModel
from controlplane.lifecycle.port import LoadPreparer, ReadinessProbe, TritonPort, model_entries
from controlplane.lifecycle.reconcile import Reconciler
from controlplane.lifecycle.recovery import Recovery, RecoveryState
from controlplane.lifecycle.restore_retry import RestoreRetry
from controlplane.lifecycle.states import (
    STRICT_TRANSITIONS_ENV,
    Cause,
    IllegalTransition,
    LoadPlan,
    ModelState,
    ModelStatus,
    check_transition,
    ready_versions,
    state_from_index,
)
from controlplane.store.base import utcnow
from controlplane.store.lifecycle import EventHandle, EventOutcome, LifecycleStore
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName

__all__ = ["OPERATOR_TRIGGERS", "LoadPreparer", "ManagedModel", "ModelManager",
           "ReadinessProbe"]

log = logging.getLogger(__name__)

#: triggers that are an operator's explicit word: they override holds, back-off and
#: quarantine (``api``: the admin API and CLI; ``repository``: RepositoryModelLoad/Unload on
#: the gateway, where allowed)
OPERATOR_TRIGGERS = frozenset({"api", "repository"})


class ModelManager:
    def __init__(
        self,
        *,
        instance: TritonPort,
        repository: ModelRepository,
        store: LifecycleStore,
        pinned: list[ModelName] | None = None,
        preparer: LoadPreparer | None = None,
        probe: ReadinessProbe | None = None,
        load_timeout_s: float | None = None,
        backoff: BackoffPolicy | None = None,
        disabled: Mapping[ModelName, str] | None = None,
    ) -> None:
        #: Triton, through the lifecycle's port (a TritonInstance in production)
        self.instance = instance
        self.repository = repository
        self.store = store
        self.pinned = list(pinned or [])
        self.preparer = preparer
        self.probe = probe
        self.load_timeout_s = load_timeout_s or instance.load_timeout_s
        self.backoff = backoff or BackoffPolicy()
        #: model -> why it is never loaded
        self.disabled = dict(disabled or {})
        #: raise on a transition missing from the table instead of logging it (tests)
        self.strict_transitions = os.environ.get(STRICT_TRANSITIONS_ENV) == "1"
        self._models: dict[ModelName, ManagedModel] = {}
        self._recovery = Recovery(self)
        self._reconciler = Reconciler(self)
        self._loads = Loads(self)
        #: whether another instance of the fleet serves the model now: a restarted Triton
        #: restores the pinned models it had, and one it never had only when none does
        self.elsewhere: Callable[[ModelName], bool] = lambda name: False
        #: called with (model, new state) after every transition; keep it cheap
        self.listeners: list[Callable[[ModelName, ModelState], None]] = []
        #: awaited before a model is unloaded (e.g. to save Triton's statistics)
        self.before_unload: list[Callable[[ModelName], Awaitable[object]]] = []
        #: awaited with (model, trigger) once a load has begun, before Triton is asked (e.g.
        #: to unload others and make room); the model is ``loading`` by then
        self.before_load: list[Callable[[ModelName, str], Awaitable[object]]] = []
        #: awaited with (model, plan, Triton's reason) when a load carrying our additions to
        #: the config (warm-up, placement) failed; the manager then loads the model plain
        self.additions_rejected: list[Callable[[ModelName, LoadPlan, str], Awaitable[object]]] = []
        #: whether this manager may load by itself (restores): False on a follower
        #: replica of a replicated control plane, whose leader does it (``cluster/``)
        self.automatic: Callable[[], bool] = lambda: True
        #: awaited with (model, load-to-ready seconds, the load event's details) after every
        #: successful load or reload (e.g. to keep cold starts per compile-cache state)
        self.after_load: list[Callable[[ModelName, float, dict[str, Any]], Awaitable[object]]] = []

    # -- reading ----------------------------------------------------------------------------
    def _model(self, name: ModelName) -> ManagedModel:
        model = self._models.get(name)
        if model is None:
            if name in self.repository:  # added to the repository since start-up
                # its row is queued: this runs on the gateway's and the scheduler's paths
                self.store.queue_model(name, self.pinned, ModelState.COLD)
                model = self._new_model(name, ModelState.COLD, None, utcnow())
                self._models[name] = model
            else:
                raise ModelNotFound(name)
        return model

    def _new_model(self, name: ModelName, state: ModelState, reason: str | None, since: Any,
                   memory_bytes: int | None = None, load_s: float | None = None) -> ManagedModel:
        disabled = self.disabled.get(name) or self.repository.refusal(name)
        return ManagedModel(name, state, reason, since, name in self.pinned, memory_bytes, load_s,
                      backoff=Backoff(self.backoff), disabled=disabled)

    def set_override(self, name: ModelName, config: dict[str, Any] | None) -> bool:
        """Load ``name`` with the operator's ``config`` from now on (None: from its
        repository again, with our additions); whether that changed anything."""
        model = self._model(name)
        changed = model.override != config
        model.reverting = model.reverting or (changed and config is None)
        model.override = config
        return changed

    def ready_names(self) -> list[ModelName]:
        """The models READY here (the routing table's source: dict scan, no statuses)."""
        return [name for name, m in self._models.items() if m.state is ModelState.READY]

    def ready_now(self, name: ModelName) -> bool:
        """The gateway's hot-path check: one dict lookup, no exceptions."""
        model = self._models.get(name)
        return model is not None and model.state is ModelState.READY

    def state(self, name: ModelName) -> ModelState:
        return self._model(name).state

    def status(self, name: ModelName) -> ModelStatus:
        m = self._model(name)
        retry_at = self.retry_at(name)
        return ModelStatus(
            m.name, self.instance.name, m.state, m.reason, m.since, m.pinned, m.memory_bytes,
            m.load_s, m.busy, held=m.held, disabled=m.disabled, failures=m.backoff.failures,
            retry_at=None if retry_at is None else time.time() + retry_at - time.monotonic(),
            versions=m.versions, quarantined=m.quarantined, kept=m.kept)

    def retry_at(self, name: ModelName) -> float | None:
        """Monotonic time before which automatic loads of a failed model wait; None: no wait."""
        m = self._model(name)
        if m.state is not ModelState.FAILED or m.load_task is not None:
            return None
        at = m.backoff.retry_at()
        return at if at is not None and at > time.monotonic() else None

    def held(self, name: ModelName) -> bool:
        """The operator unloaded it: automatic loads leave it cold."""
        return self._model(name).held

    def release(self, name: ModelName) -> ModelStatus:
        """End an operator's hold, keep and the quarantine (and the failure back-off):
        automatic loads and unloads may resume."""
        m = self._model(name)
        m.held = m.kept = False
        m.quarantined = None
        m.backoff.succeeded()
        return self.status(name)

    def keep(self, name: ModelName) -> None:
        """The operator loaded this replica here: automatic unloads leave it."""
        self._model(name).kept = True

    def kept(self, name: ModelName) -> bool:
        return self._model(name).kept

    def quarantine(self, name: ModelName, reason: str) -> None:
        """Automatic loads leave ``name`` alone until the operator loads or releases it."""
        self._model(name).quarantined = reason

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
            self._models[name] = model = self._new_model(
                name, ModelState(row.state), row.reason, row.state_since, row.memory_bytes,
                row.load_s)
            if model.disabled:
                log.warning("model %r is never loaded: %s", name, model.disabled)
        await self.reconcile()

    async def reconcile(self) -> dict[ModelName, tuple[ModelState, ModelState]]:
        """Align idle models with Triton's index; returns {model: (was, now)} for changes
        (see :mod:`controlplane.lifecycle.reconcile`)."""
        return await self._reconciler.reconcile()

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

        A model whose last load failed fails at once with that reason until its back-off
        ends, so a broken model does not make every request wait for a doomed load.
        Raises ModelLoadFailed (also for a disabled model) or Conflict (held by the operator).
        """
        model = self._model(name)
        if model.state is ModelState.READY:
            return
        await self.load(name, trigger=trigger)

    async def load(self, name: ModelName, *, trigger: str = "api") -> ModelStatus:
        """Load ``name`` (no-op when ready). Concurrent callers share one load.

        A caller that gives up (cancelled, deadline) does not cancel the load for the others.
        Automatic triggers (anything but an operator's, see ``OPERATOR_TRIGGERS``) leave a
        model held cold by the operator alone (Conflict) and wait out a failed model's
        back-off (ModelLoadFailed, with the time of the next try); an operator's load ends
        the hold and tries at once. A disabled model is never loaded (ModelLoadFailed).
        """
        model = self._model(name)
        if model.state == ModelState.READY and model.load_task is None:
            return self.status(name)
        if model.disabled:
            raise ModelLoadFailed(name, f"disabled: {model.disabled}")
        if model.quarantined and trigger not in OPERATOR_TRIGGERS:
            raise ModelLoadFailed(name, f"quarantined: {model.quarantined}; the operator's load "
                                        "or release ends it")
        if model.load_task is None:
            self.check_triton()  # a load now would only fail (dead) or hang (hung)
        if trigger in OPERATOR_TRIGGERS:
            model.held = False
            model.quarantined = None
        elif model.load_task is None:
            if model.held:
                raise HeldCold(name)
            at = self.retry_at(name)
            if at is not None:
                raise ModelLoadFailed(name, f"{model.reason or 'load failed'}; next automatic "
                                            f"retry in {at - time.monotonic():.0f}s")
        task = model.load_task
        if task is None:
            task = asyncio.create_task(self._load(model, trigger), name=f"load-{name}")
            model.load_task = task
            task.add_done_callback(lambda t: self._load_done(model, t))
        await asyncio.shield(task)
        return self.status(name)

    @staticmethod
    def _load_done(model: ManagedModel, task: asyncio.Task[None]) -> None:
        if model.load_task is task:
            model.load_task = None
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have given up already

    async def _load(self, model: ManagedModel, trigger: str) -> None:
        async with model.lock:
            if model.state == ModelState.READY:
                return  # loaded by whoever held the lock before us
            t0 = time.monotonic()
            event_id = await self._begin(model.name, "load", trigger)
            await self._set(model, ModelState.LOADING, f"load requested by {trigger}",
                            cause=Cause.LOAD)
            for hook in self.before_load:
                try:
                    await hook(model.name, trigger)
                except ControlPlaneError as exc:
                    log.warning("before-load hook for %s: %s", model.name, exc)
            details: dict[str, Any] = {}
            try:
                up = await self._loads.bring_up(model, details, mark_warming=True)
            except BaseException as exc:
                reason = self._loads.reason(model.name, exc)
                outcome = "timeout" if isinstance(exc, DeadlineExceeded) else "failed"
                await asyncio.shield(self._record_failure(
                    model, event_id, outcome, reason, details.get("triton_s"), details))
                if outcome == "timeout":
                    self._reconciler.follow(model.name)  # Triton goes on loading: take its outcome
                if isinstance(exc, ControlPlaneError):
                    raise ModelLoadFailed(model.name, reason) from exc
                raise
            # the after-load hooks tell a new replica (a load) from a reload
            await self._loaded(model, event_id, time.monotonic() - t0, up, None,
                               {**details, "trigger": trigger})

    async def reload(self, name: ModelName, *, trigger: str = "api") -> ModelStatus:
        """Load ``name`` again (a new warm-up config, say) while the loaded one serves.

        Triton keeps the current instance serving until the new one is ready, and keeps it
        when the new one fails; the model stays ``ready`` throughout. A model that is not
        ready is simply loaded.
        """
        model = self._model(name)
        if model.state is not ModelState.READY:
            return await self.load(name, trigger=trigger)
        self.check_triton()
        async with model.lock:
            t0 = time.monotonic()
            event_id = await self._begin(name, "reload", trigger)
            model.reason = f"reloading (requested by {trigger}); the loaded instance serves"
            details: dict[str, Any] = {}
            try:
                up = await self._loads.bring_up(model, details, mark_warming=False)
            except BaseException as exc:
                reason = self._loads.reason(name, exc)
                entries = None
                with contextlib.suppress(ControlPlaneError):
                    entries = model_entries(await self.instance.index(), name)
                if entries is not None and state_from_index(entries)[0] is not ModelState.READY:
                    await self._record_failure(model, event_id, "failed", reason, None, details)
                    raise ModelLoadFailed(name, reason) from exc
                if entries is not None and model.state is ModelState.READY:
                    await self._set(model, ModelState.READY,
                                    f"reload failed, previous instance serving: {reason}",
                                    cause=Cause.LOAD_FAILED, versions=ready_versions(entries))
                # else: the index is unreadable, or Triton was seen down meanwhile (the model
                # is cold then): left to the reconciler and the restore
                await self._finish(event_id, EventOutcome(
                    "failed", error=reason, details=details or None))
                raise ModelLoadFailed(name, reason) from exc
            await self._loaded(model, event_id, time.monotonic() - t0, up,
                               f"reloaded by {trigger}", details)
        return self.status(name)

    async def _loaded(self, model: ManagedModel, event_id: EventHandle, load_s: float,
                      up: BroughtUp, reason: str | None, details: dict[str, Any]) -> None:
        """A load or reload succeeded: the model is ready, the record finished, hooks told."""
        model.memory_bytes, model.load_s = up.memory_bytes or model.memory_bytes, load_s
        model.backoff.succeeded()
        model.stub_dead = False
        reason = ready_reason(reason, details)  # says so when every probe failed
        await self._set(model, ModelState.READY, reason, cause=Cause.LOADED,
                        memory_bytes=up.memory_bytes, load_s=load_s, versions=up.versions)
        await self._finish(event_id, EventOutcome(
            "ok", triton_s=up.triton_s, memory_bytes=up.memory_bytes, details=details))
        for after in self.after_load:
            await after(model.name, load_s, details)

    async def _record_failure(self, model: ManagedModel, event_id: EventHandle, outcome: str,
                              reason: str, triton_s: float | None,
                              details: dict[str, Any]) -> None:
        model.backoff.failed(time.monotonic())
        log.warning("load of %s %s (failure %d in a row, automatic retry in %.0fs): %s",
                    model.name, outcome, model.backoff.failures,
                    self.backoff.delay(model.backoff.failures), reason)
        await self._set(model, ModelState.FAILED, reason, cause=Cause.LOAD_FAILED)
        model.timed_out = outcome == "timeout"
        await self._finish(event_id, EventOutcome(
            outcome, error=reason, triton_s=triton_s, details=details or None))

    async def unload(self, name: ModelName, *, trigger: str = "api",
                     force: bool = False) -> ModelStatus:
        """Unload ``name`` and wait until Triton really released it. Idempotent."""
        model = self._model(name)
        if model.pinned and not force:
            raise Conflict(f"model '{name}' is pinned; unloading it needs force")
        if trigger in OPERATOR_TRIGGERS:
            model.held = True  # before the lock: no automatic load may slip in meanwhile
            model.kept = False
        async with model.lock:
            if model.state == ModelState.COLD:
                return self.status(name)
            if model.state is ModelState.FAILED and model.timed_out:
                # Triton is still running our timed-out load: an unload would queue behind
                # it, and calling the model cold would let the next request start another
                return self.status(name)
            if model.stub_dead:
                await self._fresh_stub_for_unload(model)
            event_id = await self._begin(name, "unload", trigger)
            if model.state is ModelState.READY:
                for hook in self.before_unload:
                    try:
                        await hook(name)
                    except ControlPlaneError as exc:
                        log.warning("before-unload hook for %s: %s", name, exc)
            await self._set(model, ModelState.UNLOADING, f"unload requested by {trigger}",
                            cause=Cause.UNLOAD)
            t_call = time.monotonic()
            try:
                await self.instance.unload(name)
            except BaseException as exc:
                outcome = "timeout" if isinstance(exc, DeadlineExceeded) else "failed"
                with contextlib.suppress(ControlPlaneError):
                    entries = model_entries(await self.instance.index(), name)
                    seen, reason = state_from_index(entries)
                    await self._set(model, seen, reason or f"unload {outcome}: {exc}",
                                    cause=Cause.UNLOAD_FAILED, versions=ready_versions(entries))
                await self._finish(event_id, EventOutcome(
                    outcome, error=str(exc), triton_s=time.monotonic() - t_call))
                raise
            # the record first: whoever sees the model cold finds its unload finished
            await self._finish(event_id, EventOutcome("ok", triton_s=time.monotonic() - t_call))
            await self._set(model, ModelState.COLD, f"unloaded by {trigger}",
                            cause=Cause.UNLOADED)
        return self.status(name)

    async def _fresh_stub_for_unload(self, model: ManagedModel) -> None:
        """Triton cannot finish unloading a model whose stub died (it stays UNLOADING until
        the server restarts): swap a live stub in first. When that fails too, only a restart
        of its Triton clears the model: Conflict, saying so, the model unchanged."""
        try:
            await self._recovery.fresh_stub(model)
        except ControlPlaneError as exc:
            raise Conflict(
                f"model '{model.name}' cannot be unloaded: its stub process died and a fresh "
                f"one did not start ({exc}); Triton keeps such a model until it restarts: "
                f"restart its Triton (warmctl triton restart --instance "
                f"{self.instance.name}, or POST /triton/restart?instance="
                f"{self.instance.name})") from exc

    async def close(self) -> None:
        """Stop watchers and wait for in-flight loads (their records must be finished)."""
        followers = self._reconciler.followers
        for task in list(followers.values()):
            task.cancel()
        loads = [m.load_task for m in self._models.values() if m.load_task is not None]
        for task in loads:
            task.cancel()
        await asyncio.gather(*followers.values(), *loads, return_exceptions=True)
        await self._recovery.close()

    # -- internals --------------------------------------------------------------------------
    # Store writes are queued (store/writebehind.py): a full, read-only or stalled disk never
    # fails or holds up a load or an unload. While the store is healthy each write is waited
    # for (at most its ``settle_s``), so a record is readable once the operation returns.
    async def _begin(self, name: ModelName, action: str, trigger: str) -> EventHandle:
        handle, queued = self.store.begin(name, action, trigger, utcnow())
        await self.store.db.writes.settle(queued)
        return handle

    async def _finish(self, event_id: EventHandle, outcome: EventOutcome) -> None:
        await self.store.db.writes.settle(self.store.finish(event_id, outcome, utcnow()))

    async def _set(self, model: ManagedModel, state: ModelState, reason: str | None, *,
                   cause: Cause, memory_bytes: int | None = None, load_s: float | None = None,
                   versions: tuple[str, ...] | None = None) -> None:
        """The one place a model's state changes: checked against ``TRANSITIONS`` (strict:
        IllegalTransition; else logged and applied, see ``states.TRANSITIONS`` for why),
        stored, told to the listeners. ``versions``: what Triton's index showed READY
        (None: kept while the model stays ready)."""
        problem = check_transition(model.state, state, cause)
        if problem is not None:
            log.error("model %s: %s", model.name, problem, stack_info=True)
            if self.strict_transitions:
                raise IllegalTransition(f"model {model.name}: {problem}")
        now = utcnow()
        model.state, model.reason, model.since = state, reason, now
        model.timed_out = False
        if versions is not None:
            model.versions = versions if state is ModelState.READY else ()
        elif state is not ModelState.READY:
            model.versions = ()
        await self.store.db.writes.settle(self.store.queue_state(
            model.name, state.value, reason, at=now, memory_bytes=memory_bytes, load_s=load_s))
        for listener in self.listeners:
            listener(model.name, state)

    # -- Triton supervision (the work is in lifecycle/recovery.py) ------------------------
    @property
    def recovery(self) -> RecoveryState:
        """What is remembered while Triton is down or loses models."""
        return self._recovery.state

    @property
    def restore_retry(self) -> RestoreRetry:
        """Restores retried after a failure not the model's (``on_pass`` reports them)."""
        return self._recovery.retry

    @property
    def triton_down_reason(self) -> str | None:
        """Why Triton cannot serve now; None while it can."""
        return self._recovery.state.down_reason

    def check_triton(self) -> None:
        """Raise TritonUnavailable at once while Triton is down (a load would only fail or
        hang); loads call this first."""
        self._recovery.check()

    async def triton_down(self, reason: str) -> None:
        """Triton's supervisor: Triton stopped serving (see :meth:`Recovery.down`)."""
        await self._recovery.down(reason)

    async def triton_up(self) -> dict[ModelName, str]:
        """Triton's supervisor: Triton serves again (see :meth:`Recovery.up`)."""
        return await self._recovery.up()

    def model_lost(self, name: ModelName, reason: str) -> None:
        """The gateway saw Triton fail a request for ``name`` believed ready (see
        :meth:`Recovery.lost`)."""
        self._recovery.lost(name, reason)
