"""A scripted fake of the lifecycle's Triton port (``controlplane/lifecycle/port.py``).

A fake behind a narrow interface, so the manager's error paths run in milliseconds; the real
adapter (``TritonInstance``) is held to the same contract by the integration tests
``tests/integration/test_lifecycle*.py`` against a real tritonserver.

It keeps a repository index like Triton's (one entry per model and version) and answers
each load or unload with the next scripted step for that model (default: it succeeds).
A step is an async callable ``(fake, model) -> None`` that changes the index and may raise.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from controlplane.errors import DeadlineExceeded, ModelLoadFailed, TritonUnavailable
from controlplane.triton.client import IndexEntry
from controlplane.triton.metrics import ModelFootprint

Step = Callable[["FakeTriton", str], Awaitable[None]]


def succeed(*versions: str) -> Step:
    """The load succeeds: ``versions`` (default "1") are READY."""
    async def step(fake: FakeTriton, model: str) -> None:
        fake.set(model, "READY", versions=versions or ("1",))
    return step


def refuse(reason: str, *, lose: bool = False) -> Step:
    """Triton refuses the load with ``reason``. Like Triton, a loaded version serves on
    (a failed reload); ``lose``: it is gone too."""
    async def step(fake: FakeTriton, model: str) -> None:
        if lose or not fake.ready(model):
            fake.set(model, "UNAVAILABLE", reason)
        raise ModelLoadFailed(model, reason)
    return step


def time_out() -> Step:
    """Our deadline passes; Triton goes on loading (the test settles it with ``set``)."""
    async def step(fake: FakeTriton, model: str) -> None:
        fake.set(model, "LOADING")
        raise DeadlineExceeded(f"load of '{model}' timed out after 0.01s")
    return step


def unreachable() -> Step:
    """Triton went away during the call (died, restarted)."""
    async def step(fake: FakeTriton, model: str) -> None:
        raise TritonUnavailable("Triton at fake is unreachable: connection reset")
    return step


def after(event: asyncio.Event, then: Step) -> Step:
    """Wait for ``event`` (a load in flight the test controls), then ``then``."""
    async def step(fake: FakeTriton, model: str) -> None:
        await event.wait()
        await then(fake, model)
    return step


async def unloaded(fake: FakeTriton, model: str) -> None:
    fake.set(model, "UNAVAILABLE", "unloaded")


class FakeTriton:
    """Satisfies ``TritonPort``; records every load and unload."""

    name = "fake"
    load_timeout_s = 60.0

    def __init__(self) -> None:
        self.entries: dict[str, list[IndexEntry]] = {}
        self.load_script: dict[str, list[Step]] = defaultdict(list)
        self.unload_script: dict[str, list[Step]] = defaultdict(list)
        #: (model, config override) per load call
        self.loads: list[tuple[str, dict[str, Any] | None]] = []
        self.unloads: list[str] = []
        #: what Triton's log says about a model's failed load
        self.details: dict[str, str] = {}
        self.config_parameters: dict[str, Any] = {"a": {"string_value": "1"}}
        self.down = False

    # -- test side ---------------------------------------------------------------------------
    def set(self, model: str, state: str, reason: str = "",
            versions: tuple[str, ...] = ("1",)) -> None:
        self.entries[model] = [IndexEntry(model, v, state, reason) for v in versions]

    def ready(self, model: str) -> bool:
        return any(e.state == "READY" for e in self.entries.get(model, []))

    def _check(self) -> None:
        if self.down:
            raise TritonUnavailable("Triton at fake is unreachable: connection refused")

    # -- the port ------------------------------------------------------------------------
    async def index(self) -> list[IndexEntry]:
        self._check()
        return [e for name in sorted(self.entries) for e in self.entries[name]]

    async def load(self, model: str, *, config: dict[str, Any] | None = None,
                   files: dict[str, bytes] | None = None, timeout_s: float | None = None) -> None:
        self._check()
        self.loads.append((model, config))
        script = self.load_script[model]
        await (script.pop(0) if script else succeed())(self, model)

    async def unload(self, model: str) -> None:
        self._check()
        self.unloads.append(model)
        script = self.unload_script[model]
        await (script.pop(0) if script else unloaded)(self, model)

    async def model_config(self, model: str) -> dict[str, Any]:
        self._check()
        return {"name": model, "backend": "python", "parameters": dict(self.config_parameters)}

    def failure_detail(self, model: str) -> str | None:
        return self.details.get(model)

    async def footprint(self, model: str) -> ModelFootprint | None:
        self._check()
        return ModelFootprint(model, instances=1, rss_bytes=1000) if self.ready(model) else None
