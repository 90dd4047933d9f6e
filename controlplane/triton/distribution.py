"""Where the tritonserver that ships in the nvidia-pytriton wheel keeps its parts."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from controlplane.errors import ControlPlaneError, TritonStartError
from controlplane.triton.repository import ModelRepository
from controlplane.types import ModelName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonDistribution:
    binary: Path
    #: libtriton_python.so and triton_python_backend_utils.py
    python_backend: Path
    #: the Python backend stub built for the running interpreter's minor version
    stub: Path
    #: shared libraries the binary and, above all, the stub need on LD_LIBRARY_PATH
    libs: Path

    @classmethod
    def locate(cls, binary: Path | None = None) -> TritonDistribution:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonStartError(
                "nvidia-pytriton is not installed: it carries the embedded tritonserver "
                "(pip install nvidia-pytriton==0.7.0), or set WARMCTL_TRITON__URL to use "
                "an external Triton"
            )
        package = Path(next(iter(spec.submodule_search_locations)))
        server = package / "tritonserver"
        minor = f"{sys.version_info.major}.{sys.version_info.minor}"
        dist = cls(
            binary=binary or server / "bin" / "tritonserver",
            python_backend=server / "backends" / "python",
            stub=server / "python_backend_stubs" / minor / "triton_python_backend_stub",
            libs=package.parent / "nvidia_pytriton.libs",
        )
        for part in (dist.binary, dist.python_backend, dist.stub, dist.libs):
            if not part.exists():
                raise TritonStartError(f"embedded Triton is incomplete: {part} is missing")
        return dist

    def assemble_backend_dir(self, plugins: Path, target: Path) -> Path:
        """Build ``--backend-directory``: ``python/`` plus one folder per plugin in ``plugins``.

        Files are hard-linked where possible, else copied: Triton resolves symlinks and refuses
        a backend library that "escapes" the backend directory. Rebuilt at every start, so
        edits to ``triton_backends/`` take effect at the next start.
        """
        if target.exists():
            shutil.rmtree(target)
        python_dir = target / "python"
        python_dir.mkdir(parents=True)
        for item in self.python_backend.iterdir():
            if item.is_file():
                _link_or_copy(item, python_dir / item.name)
        _link_or_copy(self.stub, python_dir / self.stub.name)
        if plugins.is_dir():
            for plugin in sorted(plugins.iterdir()):
                if (plugin / "model.py").is_file():
                    shutil.copytree(plugin, target / plugin.name,
                                    ignore=shutil.ignore_patterns("__pycache__"))
        return target


#: platforms served by Triton's core itself, with no backend library
CORE_PLATFORMS = frozenset({"ensemble"})
#: the backend each legacy ``platform`` value needs (Triton core, model_config_utils.cc)
PLATFORM_BACKENDS = {
    "tensorrt_plan": "tensorrt",
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
}


def backend_names(backend_dir: Path) -> frozenset[str]:
    """The backends an assembled ``--backend-directory`` offers (one folder each)."""
    if not backend_dir.is_dir():
        return frozenset()
    return frozenset(p.name for p in backend_dir.iterdir() if p.is_dir())


def backend_problem(backend: str, available: frozenset[str]) -> str | None:
    """Why a model whose config names ``backend`` (its ``backend``, else its ``platform``)
    cannot load with these backends; None when it can, or when the config names none (Triton
    then decides from the model's files)."""
    if not backend or backend in CORE_PLATFORMS:
        return None
    needed = PLATFORM_BACKENDS.get(backend, backend)
    if needed in available:
        return None
    where = f"platform '{backend}' needs backend '{needed}'" if needed != backend else (
        f"its config names backend '{backend}'")
    return (f"{where}, which this Triton does not have (it has: "
            f"{', '.join(sorted(available)) or 'none'}; backends_dir adds Python-based ones)")


def missing_backends(repository: ModelRepository, backend_dir: Path) -> dict[ModelName, str]:
    """Models of ``repository`` whose backend ``backend_dir`` lacks, each with the reason
    (logged as a warning: it is found at start-up, not at the model's first request)."""
    available = backend_names(backend_dir)
    missing: dict[ModelName, str] = {}
    for name in sorted(repository.names()):
        try:
            backend = repository.spec(name).backend
        except ControlPlaneError:
            continue  # a malformed config is reported when the model loads
        problem = backend_problem(backend, available)
        if problem is not None:
            log.warning("model '%s' will not load: %s", name, problem)
            missing[name] = problem
    return missing


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)
