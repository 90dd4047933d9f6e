"""When Triton stops serving or loses models: what the model manager marks, remembers and
restores, and how a lost model is recognised in Triton's answers.

Triton's supervisor calls :meth:`Recovery.down` and :meth:`Recovery.up` (through the
manager); the gateway reports upstream errors for models believed ready to
:meth:`Recovery.lost`. The manager owns the models and their transitions; this module only
decides which to mark and what to load again, in which order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controlplane.errors import ControlPlaneError, TritonUnavailable
from controlplane.lifecycle.restore_retry import RestoreRetry, failed_for_model
from controlplane.lifecycle.states import Cause, ModelState, state_from_index
from controlplane.store.base import utcnow
from controlplane.store.lifecycle import EventOutcome
from controlplane.triton.client import IndexEntry
from controlplane.types import ModelName

if TYPE_CHECKING:
    from controlplane.lifecycle.managed import ManagedModel
    from controlplane.lifecycle.manager import ModelManager

log = logging.getLogger(__name__)

#: Triton's answer when a Python model's stub process died (python_be.cc); the model stays
#: READY in the index, every request fails until it is loaded afresh
STUB_DEATH = "Stub process"
#: gRPC statuses that, for a model believed ready, mean Triton lost it (restart, unload
#: behind our back) or is itself going away
LOST_STATUSES = frozenset({"NOT_FOUND", "UNAVAILABLE"})
#: a model lost this often within ``LOSS_WINDOW_S`` is not reloaded at once again: it backs
#: off like a failed load (a stub that dies on every request must not spawn stubs forever)
MAX_LOSSES = 3
LOSS_WINDOW_S = 300.0
#: a load that failed this close before Triton was seen down failed because it died
DEATH_SLACK_S = 2.0


def fresh_instances(config: dict[str, object]) -> dict[str, object]:
    """``config`` with one parameter changed: loaded, it makes Triton start fresh model
    instances (new stubs) and swap them in, where a load of an unchanged config does
    nothing (python_backend keeps a model whose stub died READY)."""
    raw = config.get("parameters")
    parameters = dict(raw) if isinstance(raw, dict) else {}
    parameters["warmctl.stub_restart"] = {"string_value": f"{time.time():.3f}"}
    return {**config, "parameters": parameters}


def is_stub_death(message: str) -> bool:
    return STUB_DEATH in message and "not healthy" in message


def signals_lost(status: str, message: str) -> bool:
    """Whether an upstream error for a model believed ready is worth a check (``status``: the
    gRPC status name)."""
    return status in LOST_STATUSES or is_stub_death(message)


@dataclass
class RecoveryState:
    #: why Triton cannot serve now (None: it can); set by its supervisor
    down_reason: str | None = None
    #: monotonic time Triton was last seen going down
    down_at: float = float("-inf")
    #: models ready when Triton went down: restored once it is back
    wanted: set[ModelName] = field(default_factory=set)
    #: models whose load was in flight when Triton went down, and how many times: once is
    #: restored (plain: the failed additions are marked rejected), twice is left failed
    suspects: dict[ModelName, int] = field(default_factory=dict)
    #: the lost-model check in flight per model (one at a time)
    checking: dict[ModelName, asyncio.Task[None]] = field(default_factory=dict)
    #: monotonic times each model was found lost
    losses: dict[ModelName, deque[float]] = field(default_factory=dict)
    #: the outcome of the last restore, per model
    last_restore: dict[ModelName, str] = field(default_factory=dict)
    #: models whose restore failed for a reason not theirs, retried with back-off: the error
    retrying: dict[ModelName, str] = field(default_factory=dict)

    def lost_again(self, name: ModelName, now: float) -> bool:
        """Record a loss of ``name``; True when it was lost too often lately."""
        times = self.losses.setdefault(name, deque())
        times.append(now)
        while times and times[0] < now - LOSS_WINDOW_S:
            times.popleft()
        return len(times) >= MAX_LOSSES


class Recovery:
    """The manager's side of Triton supervision, for one Triton instance."""

    def __init__(self, manager: ModelManager) -> None:
        self.m = manager
        self.state = RecoveryState()
        self.retry = RestoreRetry(self)

    def check(self) -> None:
        """Raise TritonUnavailable at once while Triton is down."""
        reason = self.state.down_reason
        if reason is not None:
            raise TritonUnavailable(f"{reason}; loads resume once it is back")

    async def down(self, reason: str) -> None:
        """Triton stopped serving (died, hangs, unreachable): every model it served is cold
        with ``reason``, and remembered for :meth:`up`. A load in flight fails on its
        own (a dead Triton drops the call); it is remembered as a suspect."""
        r = self.state
        r.down_reason, r.down_at = reason, time.monotonic()
        self.retry.cancel()  # the next up() restores them with the rest
        r.wanted.update(r.retrying)
        r.retrying.clear()
        for name, model in self.m._models.items():
            busy = model.busy
            if model.state in (ModelState.READY, ModelState.WARMING):
                r.wanted.add(name)
            elif model.state is ModelState.LOADING and busy:
                r.suspects[name] = r.suspects.get(name, 0) + 1
            if model.state in (ModelState.READY, ModelState.WARMING) or (
                    model.state in (ModelState.LOADING, ModelState.UNLOADING) and not busy):
                await self.m._set(model, ModelState.COLD, f"Triton not serving: {reason}",
                                  cause=Cause.TRITON_DOWN)

    async def up(self) -> dict[ModelName, str]:
        """Triton serves again: take its index (a resumed server still has its models), then
        load what it lacks: pinned models by priority, then those ready before, then a load
        that was in flight when it went down (once; twice is left failed). The scheduler's
        plan goes on from there. Returns {model: outcome}."""
        r = self.state
        r.down_reason = None
        with contextlib.suppress(ControlPlaneError):
            await self.m.reconcile()
        suspects = sorted(set(r.suspects) - r.wanted - set(self.m.pinned))
        # what it had; a pinned model it never had only when no other instance has it
        pinned = [p for p in self.m.pinned
                  if p in r.wanted or p in r.suspects or not self.m.elsewhere(p)]
        order = [*pinned, *sorted(r.wanted - set(self.m.pinned)), *suspects]
        results = await self.restore(order, trigger="restore")
        for name in suspects:
            if r.suspects.get(name, 0) < 2:
                continue
            results[name] = "not restored: Triton went down twice while loading it"
        r.wanted.clear()
        r.last_restore = results
        self.retry.schedule("restore")
        log.info("after Triton came back: %s",
                 ", ".join(f"{n} {o}" for n, o in results.items()) or "nothing to restore")
        return results

    async def restore(self, order: list[ModelName], *, trigger: str) -> dict[ModelName, str]:
        r = self.state
        results: dict[ModelName, str] = {}
        if not self.m.automatic():  # a follower replica: the leader restores, once
            return {name: "left to the leader" for name in dict.fromkeys(order)}
        for name in dict.fromkeys(order):
            r.retrying.pop(name, None)  # kept only if it fails again for a reason not its own
            model = self.m._models.get(name)
            if model is None or model.held or model.disabled or model.quarantined:
                continue
            if model.state is ModelState.READY:
                results[name] = "ready"
                continue
            if r.suspects.get(name, 0) >= 2:
                continue
            if (model.state is ModelState.FAILED
                    and model.backoff.failed_at >= r.down_at - DEATH_SLACK_S):
                model.backoff.succeeded()  # it failed because Triton went down
            for attempt in range(3):
                try:
                    await self.m.load(name, trigger=trigger)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if r.down_reason is not None or failed_for_model(exc):
                        results[name] = f"failed: {exc}"
                        break
                    # Triton's connection, the store, a bug: not the model. Retried here
                    # briefly (a fresh connection), then with back-off (RestoreRetry).
                    if not isinstance(exc, ControlPlaneError):
                        log.error("restore of %s failed (retried)", name, exc_info=exc)
                    model.backoff.succeeded()
                    results[name] = r.retrying[name] = f"retrying: {exc}"[:500]
                    if attempt < 2 and isinstance(exc.__cause__, TritonUnavailable):
                        await asyncio.sleep(1.0)
                        continue
                    break
                results[name] = "ok"
                r.suspects.pop(name, None)
                break
        return results

    async def close(self) -> None:
        """Stop the restore retries (the manager closes)."""
        await self.retry.close()

    def lost(self, name: ModelName, reason: str) -> None:
        """The gateway saw Triton fail a request for ``name`` while we believed it ready
        (NOT_FOUND, UNAVAILABLE, or its stub process died). Checks Triton's index in the
        background, one check per model at a time; does nothing while Triton is down."""
        r = self.state
        model = self.m._models.get(name)
        if (r.down_reason is not None or name in r.checking or model is None
                or model.state is not ModelState.READY):
            return
        task = asyncio.create_task(self._check_lost(name, reason), name=f"lost-{name}")
        r.checking[name] = task
        task.add_done_callback(lambda _: r.checking.pop(name, None))

    async def _check_lost(self, name: ModelName, reason: str) -> None:
        """Every model ready here but not in Triton's index is cold (an external Triton that
        restarted forgets them all); a model whose stub died is failed. Then each is loaded
        again, pinned first, unless it was lost too often lately (it backs off then)."""
        r = self.state
        stub_died = is_stub_death(reason)
        try:
            observed_at = utcnow()
            entries = await self.m.instance.index()
        except ControlPlaneError:
            return  # Triton itself does not answer: its supervisor's business
        by_model: dict[ModelName, list[IndexEntry]] = {}
        for entry in entries:
            by_model.setdefault(entry.name, []).append(entry)
        lost: dict[ModelName, str] = {}
        for other, model in self.m._models.items():
            if model.state is not ModelState.READY or model.since > observed_at:
                continue
            if other == name and stub_died:
                lost[other] = f"its stub process died ({reason[:200]})"
                model.stub_dead = True
            elif state_from_index(by_model.get(other, []))[0] is not ModelState.READY:
                lost[other] = "Triton no longer has it loaded (restarted, or unloaded it " \
                              "behind our back)"
        now = time.monotonic()
        reload = []
        for other, why in lost.items():
            model = self.m._models[other]
            if model.state is not ModelState.READY or model.since > observed_at:
                continue  # changed while we marked the others (an unload, say): that counts
            log.warning("model %s lost: %s", other, why)
            if r.lost_again(other, now):
                model.backoff.failed(now)
                await self.m._set(model, ModelState.FAILED, f"{why}; lost repeatedly: automatic "
                                  "reloads back off", cause=Cause.LOST)
                continue
            await self.m._set(model, ModelState.FAILED if other == name and stub_died
                              else ModelState.COLD, why, cause=Cause.LOST)
            reload.append(other)
        if stub_died and name in reload:
            reload.remove(name)
            await self._restart_stub(self.m._models[name], lost[name])
        order = [p for p in self.m.pinned if p in reload] + sorted(set(reload) - set(self.m.pinned))
        if order:
            r.last_restore = await self.restore(order, trigger="recovery")
            self.retry.schedule("recovery")

    async def fresh_stub(self, model: ManagedModel) -> None:
        """Swap a live stub in for ``model``'s dead one (see :func:`fresh_instances`); the
        caller holds its lock. Errors as ``TritonPort.load``."""
        config = await self.m.instance.model_config(model.name)
        await self.m.instance.load(model.name, timeout_s=self.m.load_timeout_s,
                                   config=fresh_instances(config))
        model.stub_dead = False

    async def _restart_stub(self, model: ManagedModel, why: str) -> None:
        """Triton keeps a model whose stub died READY; a load with the same config does
        nothing for it and an unload can hang. A load of its own config with one parameter
        changed makes Triton start fresh instances (and run its warm-up) and swap them in."""
        async with model.lock:
            event_id = await self.m._begin(model.name, "reload", "recovery")
            t0 = time.monotonic()
            try:
                await self.fresh_stub(model)
            except ControlPlaneError as exc:
                model.backoff.failed(time.monotonic())
                reason = f"{why}; reload failed: {exc}"
                await self.m._set(model, ModelState.FAILED, reason, cause=Cause.LOAD_FAILED)
                await self.m._finish(event_id, EventOutcome(
                    "failed", error=reason, triton_s=time.monotonic() - t0))
                return
            model.backoff.succeeded()
            await self.m._set(model, ModelState.READY, f"reloaded after {why}",
                              cause=Cause.LOADED, versions=await self.m._loads.versions(model.name))
            await self.m._finish(event_id, EventOutcome(
                "ok", triton_s=time.monotonic() - t0,
                details={"recovered": why, "stub_restart": True}))
