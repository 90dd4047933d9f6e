"""Lifecycle states, their allowed transitions, the snapshots the API shows, and how
Triton's index maps onto them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from controlplane.triton.client import LOADING, READY, UNAVAILABLE, UNLOADING, IndexEntry
from controlplane.types import ModelConfigJson, ModelFiles, ModelName


class ModelState(StrEnum):
    COLD = "cold"
    LOADING = "loading"
    #: Triton reports it ready; the control plane is still probing it and routes nothing to it
    WARMING = "warming"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


#: Triton's word for a version that was unloaded on purpose (anything else is a failure).
UNLOADED_REASON = "unloaded"


class ModelKey(NamedTuple):
    """One served version of a model: what a per-version route or a canary names."""

    model: ModelName
    #: Triton's version directory name ("1", "2", ...)
    version: str


@dataclass(frozen=True)
class ModelStatus:
    name: ModelName
    instance: str
    state: ModelState
    reason: str | None
    since: datetime
    pinned: bool
    #: resident memory measured by the plugin at the last successful load
    memory_bytes: int | None
    #: load-to-ready seconds of the last successful load
    load_s: float | None
    #: a load or unload is in flight
    busy: bool
    #: the operator unloaded it: automatic loads leave it cold until the operator loads it
    held: bool = False
    #: why it is never loaded (settings, or a name Triton cannot serve); None: it may be
    disabled: str | None = None
    #: why automatic loads leave it alone (its requests crashed Triton); None: they may load it
    quarantined: str | None = None
    #: the operator loaded this replica here: automatic unloads leave it
    kept: bool = False
    #: failed loads in a row
    failures: int = 0
    #: wall-clock (epoch seconds) before which automatic loads wait; None: no back-off now
    retry_at: float | None = None
    #: the versions Triton's index showed READY when we last looked (load, reconcile),
    #: ascending; empty while the model does not serve
    versions: tuple[str, ...] = ()
    #: why this replica failed its health check and takes no traffic (``fleet/health.py``);
    #: for a model, its unhealthy replicas' reasons; None: healthy (or never probed)
    unhealthy: str | None = None

    @property
    def keys(self) -> tuple[ModelKey, ...]:
        """The (model, version) pairs it serves."""
        return tuple(ModelKey(self.name, version) for version in self.versions)


@dataclass(frozen=True)
class LoadPlan:
    """What one load sends to Triton: an optional config override and model files."""

    config: ModelConfigJson | None = None
    files: ModelFiles | None = None
    #: recorded with the load event (e.g. which warm-up config version was applied)
    details: dict[str, Any] | None = None
    #: what a load Triton refuses with our additions falls back to; None: the model's own
    #: config.pbtxt (a rollout's pin of the active version must survive a refused target)
    fallback: ModelConfigJson | None = None


def ready_versions(entries: Iterable[IndexEntry]) -> tuple[str, ...]:
    """The versions Triton's index shows READY, numerically ascending."""
    ready = {e.version for e in entries if e.version is not None and e.state == READY}
    return tuple(sorted(ready, key=lambda v: (len(v), v)))


def state_from_index(entries: Iterable[IndexEntry]) -> tuple[ModelState, str | None]:
    """What Triton's repository index says about one model, as our state and reason."""
    versions = [e for e in entries if e.version is not None]
    states = {e.state for e in versions}
    if READY in states:
        return ModelState.READY, None
    if LOADING in states:
        return ModelState.LOADING, "loading in Triton"
    if UNLOADING in states:
        return ModelState.UNLOADING, "unloading in Triton"
    for entry in versions:
        if entry.state == UNAVAILABLE and entry.reason and entry.reason != UNLOADED_REASON:
            return ModelState.FAILED, entry.reason
    return ModelState.COLD, None


# -- transitions --------------------------------------------------------------------------
class Cause(StrEnum):
    """Why a model's state changes: the "when" of a transition, passed to the one place that
    sets states (``ModelManager._set``) and checked against :data:`TRANSITIONS`."""

    LOAD = "load"
    PROBE = "probe"
    LOADED = "loaded"
    LOAD_FAILED = "load failed"
    UNLOAD = "unload"
    UNLOADED = "unloaded"
    UNLOAD_FAILED = "unload failed"
    ADOPT = "adopt"
    TRITON_DOWN = "triton down"
    LOST = "lost"


@dataclass(frozen=True)
class Transition:
    """Any of ``sources`` may go to any of ``targets`` for ``cause``; ``when`` says when."""

    cause: Cause
    sources: frozenset[ModelState]
    targets: frozenset[ModelState]
    when: str


def _t(cause: Cause, sources: Iterable[ModelState], targets: Iterable[ModelState],
       when: str) -> Transition:
    return Transition(cause, frozenset(sources), frozenset(targets), when)


S = ModelState  # short for the table below; deleted after it
#: what Triton's index can show (``state_from_index``): warming is ours alone
TRITON_STATES = frozenset({S.COLD, S.LOADING, S.READY, S.UNLOADING, S.FAILED})

#: Every transition the lifecycle may make. Our operations hold the model's lock; ADOPT,
#: TRITON_DOWN and LOST come from Triton (its index, its supervisor, a failed request).
#: ``ModelManager._set`` checks each change here. One missing from the table raises
#: IllegalTransition in strict mode (tests: ``WARMCTL_STRICT_TRANSITIONS=1``); in production
#: it is logged as an error and applied all the same: callers derive the new state from what
#: did happen in Triton, so refusing it would leave a state known to be false (a dead model
#: routed to, a ready one waited on), and raising would abandon an operation halfway (an
#: open load record, a model stuck loading) -- the reconciler then repairs what it can.
TRANSITIONS: tuple[Transition, ...] = (
    _t(Cause.LOAD, {S.COLD, S.FAILED, S.LOADING, S.UNLOADING}, {S.LOADING},
       "a load of ours begins (loading/unloading: one Triton was doing alone)"),
    _t(Cause.PROBE, {S.LOADING}, {S.WARMING},
       "Triton loaded it; our readiness probe runs before any request is routed to it"),
    _t(Cause.LOADED, {S.LOADING, S.WARMING}, {S.READY}, "our load finished (probed, measured)"),
    _t(Cause.LOADED, {S.READY}, {S.READY}, "a reload finished: the new instance serves"),
    _t(Cause.LOADED, {S.FAILED}, {S.READY}, "a model whose stub died was reloaded"),
    _t(Cause.LOAD_FAILED, {S.LOADING, S.WARMING}, {S.FAILED},
       "our load failed, timed out (Triton may go on) or was cancelled"),
    _t(Cause.LOAD_FAILED, {S.COLD}, {S.FAILED},
       "our load failed after Triton was seen down during it (down made the model cold)"),
    _t(Cause.LOAD_FAILED, {S.READY}, {S.READY, S.FAILED},
       "a reload failed: the previous instance serves on (ready), or Triton lost it (failed)"),
    _t(Cause.LOAD_FAILED, {S.FAILED}, {S.FAILED}, "the reload of a model whose stub died failed"),
    _t(Cause.UNLOAD, {S.READY, S.FAILED, S.LOADING, S.UNLOADING}, {S.UNLOADING},
       "an unload of ours begins (loading/unloading: one Triton was doing alone)"),
    _t(Cause.UNLOADED, {S.UNLOADING}, {S.COLD}, "Triton released every version"),
    _t(Cause.UNLOAD_FAILED, {S.UNLOADING}, TRITON_STATES,
       "our unload failed or timed out: the model is what Triton's index shows"),
    _t(Cause.ADOPT, {S.COLD}, TRITON_STATES - {S.COLD},
       "loaded, failed or being loaded/unloaded behind our back (someone else, a restart)"),
    _t(Cause.ADOPT, {S.LOADING}, TRITON_STATES - {S.LOADING},
       "a load Triton ran alone settled (or it moved on to an unload)"),
    _t(Cause.ADOPT, {S.UNLOADING}, TRITON_STATES - {S.UNLOADING},
       "an unload Triton ran alone settled (or it moved on to a load)"),
    _t(Cause.ADOPT, {S.READY}, TRITON_STATES - {S.READY},
       "Triton no longer serves it (unloaded behind our back, restarted, failed)"),
    _t(Cause.ADOPT, {S.FAILED}, {S.READY, S.UNLOADING, S.FAILED},
       "Triton's late verdict on a load of ours that timed out (ready, or failed with its "
       "reason), or a load/unload behind our back; failed stays failed while Triton forgets "
       "the failure (cold) or is still loading"),
    _t(Cause.ADOPT, {S.WARMING}, TRITON_STATES,
       "at start-up: the previous run stopped while probing it; Triton says what it is"),
    _t(Cause.TRITON_DOWN, {S.READY, S.WARMING, S.LOADING, S.UNLOADING}, {S.COLD},
       "Triton stopped serving (died, hangs, unreachable); a load of ours in flight stays "
       "loading and fails on its own"),
    _t(Cause.LOST, {S.READY}, {S.COLD, S.FAILED},
       "a request found Triton no longer serving it (cold), or its stub process dead (failed)"),
)
del S

#: set to "1" to make a transition missing from the table raise (tests) rather than be logged
STRICT_TRANSITIONS_ENV = "WARMCTL_STRICT_TRANSITIONS"

_ALLOWED: frozenset[tuple[ModelState, ModelState, Cause]] = frozenset(
    (source, target, t.cause) for t in TRANSITIONS for source in t.sources for target in t.targets)


class IllegalTransition(RuntimeError):
    """A transition not in :data:`TRANSITIONS`: a bug in the lifecycle's bookkeeping."""


def check_transition(was: ModelState, now: ModelState, cause: Cause) -> str | None:
    """None when ``was -> now`` for ``cause`` is in :data:`TRANSITIONS`; else what is wrong."""
    if (was, now, cause) in _ALLOWED:
        return None
    allowed = sorted(to.value for (source, to, c) in _ALLOWED if source is was and c is cause)
    return (f"illegal transition {was.value} -> {now.value} ({cause.value}); from {was.value} "
            f"{cause.value} may go to: {', '.join(allowed) or 'nothing'}")
