"""What the manager keeps per model between operations (state lives here, not in Triton)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.lifecycle.backoff import Backoff
from controlplane.lifecycle.states import ModelState
from controlplane.types import ModelName


@dataclass(eq=False)
class ManagedModel:
    name: ModelName
    state: ModelState
    reason: str | None
    since: datetime
    pinned: bool
    memory_bytes: int | None = None
    load_s: float | None = None
    #: failed loads in a row: automatic loads wait out the back-off
    backoff: Backoff = field(default_factory=Backoff)
    #: the operator unloaded it: only the operator loads it again (or releases the hold)
    held: bool = False
    #: why it must never be loaded (settings, a name Triton's Python backend cannot serve)
    disabled: str | None = None
    #: why automatic loads leave it alone: its requests crashed Triton (``fleet/crashes.py``);
    #: only the operator's load or release ends it
    quarantined: str | None = None
    #: the operator loaded this replica on this instance: automatic unloads (trims, evictions,
    #: room-making) leave it until the operator unloads or releases it
    kept: bool = False
    #: the last load failed on our timeout, not in Triton: Triton's verdict is still to come
    timed_out: bool = False
    #: its stub process died and no fresh one replaced it: Triton keeps the model READY with
    #: a dead stub, ignores a load of the same config and cannot finish an unload of it
    stub_dead: bool = False
    #: the versions Triton's index showed READY when we last looked (see ``ModelStatus``)
    versions: tuple[str, ...] = ()
    #: the config the operator loaded it with through Triton's repository API (a
    #: RepositoryModelLoad with a ``config`` parameter): loads use it as it is, without
    #: warmctl's additions, until the operator's next load without one
    override: dict[str, Any] | None = None
    #: an override was just dropped: Triton reloads a loaded model only when its files
    #: changed, so the next load sends the repository's config explicitly
    reverting: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    load_task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """An operation of ours runs on it (its outcome wins over Triton's index)."""
        return self.lock.locked() or self.load_task is not None
