"""A model's view in the admin API, from its status."""

from __future__ import annotations

from datetime import UTC, datetime

from controlplane.admin.schemas import ModelView
from controlplane.lifecycle.states import ModelState, ModelStatus


def _status(state: ModelState, versions: tuple[str, ...]) -> ModelStatus:
    return ModelStatus("m", "a", state, None, datetime(2026, 12, 7, tzinfo=UTC), False,
                       memory_bytes=300 << 20, load_s=2.5, busy=False, versions=versions)


def test_a_cold_model_holds_no_memory_and_serves_no_version() -> None:
    ready = ModelView.of(_status(ModelState.READY, ("1", "2")))
    assert ready.memory_bytes == 300 << 20 and ready.versions == ["1", "2"]
    cold = ModelView.of(_status(ModelState.COLD, ()))
    # the memory measured at its last load is not what it holds now
    assert cold.memory_bytes is None and cold.versions == [] and cold.load_s == 2.5
    assert cold.active_version is None and cold.target_version is None
