"""What the fleet needs to know of a model's configuration to route it, read once and cached.

A stateful model (``sequence_batching``) keeps each sequence's state on one replica, so its
requests are routed by sequence (``sequences.py``), and Triton forgets an idle sequence after
the model's ``max_sequence_idle_microseconds`` (1 s when unset or 0: ``model_config.proto``).
The cache is cleared whenever the fleet re-reads the repository (``Fleet.statuses``).
"""

from __future__ import annotations

from controlplane.errors import ControlPlaneError
from controlplane.fleet.sequences import DEFAULT_IDLE_S
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName


class ModelTraits:
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self._stateful: dict[ModelName, bool] = {}
        self._idle_s: dict[ModelName, float] = {}

    def stateful(self, model: ModelName) -> bool:
        """``sequence_batching``: a sequence's requests go to one replica."""
        found = self._stateful.get(model)
        if found is None:
            try:
                found = self.repository.spec(model).sequence_batching
            except ControlPlaneError:
                found = False
            self._stateful[model] = found
        return found

    def sequence_idle_s(self, model: ModelName) -> float:
        """Seconds Triton keeps an idle sequence of ``model``."""
        found = self._idle_s.get(model)
        if found is None:
            try:
                config = self.repository.spec(model).config.get("sequence_batching") or {}
                micros = int(config.get("max_sequence_idle_microseconds") or 0)
            except (ControlPlaneError, TypeError, ValueError):
                micros = 0
            found = self._idle_s[model] = micros / 1e6 if micros > 0 else DEFAULT_IDLE_S
        return found

    def clear(self) -> None:
        self._stateful.clear()
        self._idle_s.clear()
