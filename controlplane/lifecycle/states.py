"""Lifecycle states, the snapshots the API shows, and how Triton's index maps onto them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

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
    #: failed loads in a row
    failures: int = 0
    #: wall-clock (epoch seconds) before which automatic loads wait; None: no back-off now
    retry_at: float | None = None


@dataclass(frozen=True)
class LoadPlan:
    """What one load sends to Triton: an optional config override and model files."""

    config: ModelConfigJson | None = None
    files: ModelFiles | None = None
    #: recorded with the load event (e.g. which warm-up config version was applied)
    details: dict[str, Any] | None = None


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
