"""What each model costs to hold and to load, as the policy sees it.

Measured figures win (the plugin's resident memory and the last load-to-ready time, both
recorded with every load); before a model was ever loaded, estimates stand in: its files on
disk plus the runtime a model instance carries, and a default load time.
"""

from __future__ import annotations

from collections.abc import Callable

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
        #: (model, last load-to-ready) -> the load-to-ready to expect next, where it depends
        #: on more than the last load (a torch.compile model's cache: compile_cache/cold_start)
        self.cold_start: Callable[[ModelName, float | None], float | None] | None = None

    def update(self, statuses: list[ModelStatus], held: set[ModelName]) -> None:
        """Refresh from the lifecycle's statuses; ``held`` (pins, operator rules) never unload."""
        for status in statuses:
            name = status.name
            memory = status.memory_bytes / MIB if status.memory_bytes else None
            if memory is None:
                memory = self._estimate_mb(name)
            measured_s = status.load_s
            if self.cold_start is not None:
                measured_s = self.cold_start(name, measured_s)
            load_s = measured_s or self.options.default_load_s
            self.profiles[name] = ModelProfile(
                name, memory, load_s, pinned=status.pinned or name in held)
            self.measured[name] = (status.memory_bytes is not None, measured_s is not None)

    def _estimate_mb(self, name: ModelName) -> float:
        try:
            spec = self.repository.spec(name)
            weights = self.repository.weight_bytes(name) / MIB
        except Exception:  # an unparseable model: still budget for the runtime
            return self.options.runtime_overhead_mb
        return spec.instance_count * (weights + self.options.runtime_overhead_mb)
