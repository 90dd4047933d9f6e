"""Whether the control plane may take traffic, computed from live state on every question.

Ready means: Triton serves (with a fleet: at least one instance serves and takes traffic),
start-up has loaded the pinned models, and every pinned model is ready now (on some
instance) -- one that failed, was force-unloaded by the operator, or went cold with Triton
makes the whole control plane not ready until it is back. A pinned model that is disabled
is never loaded, so it does not count. ``/readyz`` and gRPC
``ServerReady`` both ask :attr:`Readiness.ready`; nothing here calls Triton.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from controlplane.types import ModelName

if TYPE_CHECKING:
    from controlplane.lifecycle.states import ModelState, ModelStatus


class Models(Protocol):
    """What readiness reads of the models (a ModelManager, or the fleet)."""

    @property
    def pinned(self) -> list[ModelName]: ...
    def ready_now(self, name: ModelName) -> bool: ...
    def status(self, name: ModelName) -> ModelStatus: ...
    def state(self, name: ModelName) -> ModelState: ...


class Serving(Protocol):
    """Whether Triton serves (a supervisor, or the fleet: any instance)."""

    @property
    def serving(self) -> bool: ...
    def down_reason(self) -> str | None: ...


@dataclass
class Readiness:
    pinned_done: bool = False
    #: pinned models that failed at start-up (for the record: live state decides)
    pinned_failures: dict[ModelName, str] = field(default_factory=dict)
    manager: Models | None = None
    supervisor: Serving | None = None

    @property
    def ready(self) -> bool:
        """The fast answer (gRPC ServerReady asks it per call): a few dict lookups."""
        manager, supervisor = self.manager, self.supervisor
        if manager is None or supervisor is None or not self.pinned_done:
            return False
        if not supervisor.serving:
            return False
        return all(manager.ready_now(name) or self._exempt(manager, name)
                   for name in manager.pinned)

    @staticmethod
    def _exempt(manager: Models, name: ModelName) -> bool:
        return bool(manager.status(name).disabled)

    def problems(self) -> list[str]:
        """Why not ready, one line each (empty when ready)."""
        manager, supervisor = self.manager, self.supervisor
        if manager is None or supervisor is None:
            return ["control plane starting"]
        found = []
        reason = supervisor.down_reason()
        if reason is not None:
            found.append(reason)
        if not self.pinned_done:
            found.append("pinned models still loading after start-up")
        for name in manager.pinned:
            if manager.ready_now(name):
                continue
            status = manager.status(name)
            if status.disabled:
                continue
            line = f"pinned model '{name}' is {status.state.value}"
            if status.held:
                line += " (unloaded by the operator: load it to end the hold)"
            if status.reason:
                line += f": {status.reason[:300]}"
            found.append(line)
        return found

    def detail(self) -> dict[str, Any]:
        manager = self.manager
        pinned = {} if manager is None else {
            name: manager.state(name).value for name in manager.pinned}
        pending = [] if manager is None or self.pinned_done else list(manager.pinned)
        return {"problems": self.problems(), "pinned": pinned, "pinned_pending": pending,
                "pinned_failures": self.pinned_failures}
