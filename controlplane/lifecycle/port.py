"""The narrow ports of the lifecycle: one Triton instance, and the load's two plug-ins.

Everything :class:`~controlplane.lifecycle.manager.ModelManager`, its reconciler and its
recovery ask of Triton, and nothing else (ModelMesh's ``ModelLoader`` plays this part).
:class:`controlplane.triton.instance.TritonInstance` is the real adapter; unit tests drive the
manager's error paths through a scripted fake (``tests/unit/lifecycle/fake_port.py``), and
the integration tests in ``tests/integration/test_lifecycle*.py`` are the adapter's contract.

Every call is bounded in time by the adapter. Errors are :class:`ControlPlaneError`
subclasses: ``ModelLoadFailed`` (Triton refused the load, with its reason),
``DeadlineExceeded`` (our deadline passed; Triton may go on), ``TritonUnavailable`` (Triton
does not answer), ``ModelNotFound``.
"""

from __future__ import annotations

from typing import Any, Protocol

from controlplane.lifecycle.states import LoadPlan
from controlplane.triton.client import IndexEntry
from controlplane.triton.metrics import ModelFootprint
from controlplane.triton.repository import ModelSpec
from controlplane.types import InstanceName, ModelConfigJson, ModelFiles, ModelName


class TritonPort(Protocol):
    """One Triton instance as the lifecycle sees it.

    No version argument on ``load``: Triton's load API has none -- which versions a model
    serves is its config's ``version_policy``, which a ``config`` override carries. The
    versions really loaded are read back from :meth:`index`.
    """

    @property
    def name(self) -> InstanceName:
        """The instance's name in this control plane (``default`` for the single one)."""
        ...

    @property
    def load_timeout_s(self) -> float:
        """The default deadline of a load, seconds."""
        ...

    async def index(self) -> list[IndexEntry]:
        """Triton's repository index: one entry per (model, version) it knows, plus one
        without a version per model it never loaded."""
        ...

    async def load(self, model: ModelName, *, config: ModelConfigJson | None = None,
                   files: ModelFiles | None = None, timeout_s: float | None = None) -> None:
        """Load or reload ``model``; returns once it serves. ``config`` replaces its
        config.pbtxt, ``files`` its directory. Triton keeps a loaded model serving while a
        reload runs, and when the reload fails."""
        ...

    async def unload(self, model: ModelName) -> None:
        """Unload ``model`` and return once Triton really released every version."""
        ...

    async def model_config(self, model: ModelName) -> ModelConfigJson:
        """The config Triton runs ``model`` with (JSON, proto field names)."""
        ...

    def failure_detail(self, model: ModelName) -> str | None:
        """Triton's own explanation of a failed load where only its log has it; None when
        unknown (an external Triton's log is not readable)."""
        ...

    async def footprint(self, model: ModelName) -> ModelFootprint | None:
        """What our plugin measured for the loaded ``model``; None when there are no plugin
        metrics or none for it. TritonUnavailable when the metrics cannot be read."""
        ...


class LoadPreparer(Protocol):
    """Decides what a load sends to Triton (warm-up and placement plug in here)."""

    async def prepare(self, spec: ModelSpec) -> LoadPlan: ...


class ReadinessProbe(Protocol):
    """Runs after Triton reports a model ready and before we route to it; returns details."""

    async def probe(self, spec: ModelSpec) -> dict[str, Any]: ...


def model_entries(entries: list[IndexEntry], model: ModelName) -> list[IndexEntry]:
    """The index entries of one model (Triton has no per-model index call)."""
    return [entry for entry in entries if entry.name == model]
