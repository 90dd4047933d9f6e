"""The words of Triton's supervision: its states, what it watches, who it tells."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Protocol


class TritonState(StrEnum):
    LIVE = "live"
    #: liveness probes missed (hung, stopped, overloaded); an embedded process still exists
    UNRESPONSIVE = "unresponsive"
    #: exited, or (external) unreachable
    DOWN = "down"
    RESTARTING = "restarting"
    #: restarts exhausted (or disabled): stays down until the operator restarts it
    FAILED = "failed"
    STOPPED = "stopped"


class Supervised(Protocol):
    """What the supervisor needs of the embedded process (``TritonProcess``)."""

    @property
    def pid(self) -> int | None: ...
    def exit_future(self) -> asyncio.Future[int]: ...
    async def launch(self, attempts: int = 3) -> None: ...
    def stop(self) -> int | None: ...
    def kill(self) -> int | None: ...
    def cleanup(self) -> None: ...
    def fatal_signal(self) -> str | None: ...


class Listener(Protocol):
    """Told of every change of Triton's availability (the model manager)."""

    async def triton_down(self, reason: str) -> None: ...
    async def triton_up(self) -> object: ...


#: one liveness check: True when live; raises (timeout, unreachable) or returns False if not
Probe = Callable[[], Awaitable[bool]]


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
