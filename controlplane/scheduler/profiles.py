"""What each model costs to hold and to load, as the policy sees it.

Measured figures win (the plugin's resident memory and the last load-to-ready time, both
recorded with every load); before a model was ever loaded, estimates stand in: its files on
disk plus the runtime a model instance carries, and a default load time.
"""

from __future__ import annotations

from controlplane.config import SchedulerOptions
from controlplane.lifecycle.states import ModelStatus
from controlplane.policy.types import ModelProfile
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName

MIB = 2**20


class ProfileBook:
    """A mutable mapping handed to the policy once; updated in place as measurements come."""

    def __init__(self, repository: ModelRepository, options: SchedulerOptions) -> None:
        self.repository = repository
        self.options = options
        self.profiles: dict[ModelName, ModelProfile] = {}
        #: which figures are measured rather than estimated, for explanations
        self.measured: dict[ModelName, tuple[bool, bool]] = {}

    def update(self, statuses: list[ModelStatus], held: set[ModelName]) -> None:
        """Refresh from the lifecycle's statuses; ``held`` (pins, operator rules) never unload."""
        for status in statuses:
            name = status.name
            memory = status.memory_bytes / MIB if status.memory_bytes else None
            if memory is None:
                memory = self._estimate_mb(name)
            load_s = status.load_s or self.options.default_load_s
            self.profiles[name] = ModelProfile(
                name, memory, load_s, pinned=status.pinned or name in held)
            self.measured[name] = (status.memory_bytes is not None, status.load_s is not None)

    def _estimate_mb(self, name: ModelName) -> float:
        try:
            spec = self.repository.spec(name)
            weights = self.repository.weight_bytes(name) / MIB
        except Exception:  # an unparseable model: still budget for the runtime
            return self.options.runtime_overhead_mb
        return spec.instance_count * (weights + self.options.runtime_overhead_mb)
