"""What the scheduler needs of the models it drives: one instance's ``ModelManager`` or a fleet.

The scheduler decides; whoever implements :class:`ModelControl` carries the decisions out. With
one Triton instance that is the lifecycle's ``ModelManager``; with several it is the fleet, which
loads a model where its replica placement says and reports the best replica's status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from controlplane.lifecycle.states import ModelStatus
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName

#: awaited with (model, trigger) once a load has begun, before Triton is asked
BeforeLoad = Callable[[ModelName, str], Awaitable[object]]


class ModelControl(Protocol):
    @property
    def repository(self) -> ModelRepository:
        """The model repository: specs, files and weight sizes of every model."""

    @property
    def pinned(self) -> Collection[ModelName]:
        """Models configured as always loaded."""

    @property
    def before_load(self) -> list[BeforeLoad]:
        """Hooks awaited before a load; the scheduler appends its room-making here."""

    def statuses(self) -> list[ModelStatus]:
        """Every model of the repository, with its lifecycle state."""

    def status(self, name: ModelName) -> ModelStatus:
        """One model's status; raises ``ControlPlaneError`` (NotFound) for an unknown name."""

    async def load(self, name: ModelName, *, trigger: str) -> object:
        """Load ``name`` and wait until it serves; raises ``ControlPlaneError`` on failure."""

    async def unload(self, name: ModelName, *, trigger: str) -> object:
        """Unload ``name`` (everywhere it is resident); raises ``ControlPlaneError``."""
