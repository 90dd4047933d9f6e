"""The example models: deterministic weights, and the properties the product relies on."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from controlplane.triton.repository import ModelRepository
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_models", ROOT / "model_repository" / "build_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for name, tensor in torch.jit.load(str(path)).state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def test_weights_are_deterministic(builder: ModuleType, tmp_path: Path) -> None:
    a = builder.build(tmp_path / "a", "shortform_ranker")
    b = builder.build(tmp_path / "b", "shortform_ranker")
    assert _weights_digest(a) == _weights_digest(b)
    c = builder.build(tmp_path / "c", "thumbnail_scorer")
    assert _weights_digest(a) != _weights_digest(c)


def test_configs_match_the_modules(builder: ModuleType, tmp_path: Path) -> None:
    """Every committed config.pbtxt describes inputs its module really accepts."""
    repo = ModelRepository(ROOT / "model_repository")
    assert repo.names() == set(builder.MODELS)
    sizes = {}
    # the exported ones are checked against their configs as they are built (build_models)
    for name in sorted(n for n, e in builder.MODELS.items() if e.format == "torchscript"):
        spec = repo.spec(name)
        module = torch.jit.load(str(builder.build(tmp_path, name)))
        args = []
        for t in spec.inputs:
            dims = [7 if d == -1 else d for d in t.dims]
            if t.datatype == "INT64":
                hi = int(spec.parameters[f"input_range.{t.name}"].split(":")[1])
                args.append(torch.randint(0, hi, (2, *dims)))
            else:
                args.append(torch.randn(2, *dims))
        out = module(*args)
        assert out.shape == (2, *spec.outputs[0].dims)
        sizes[name] = (tmp_path / name / "1" / "model.pt").stat().st_size
    # ~1 MB to ~100 MB, so memory budgets matter
    assert min(sizes.values()) < 2e6 and max(sizes.values()) > 80e6


def test_an_out_of_range_id_breaks_the_id_model(builder: ModuleType, tmp_path: Path) -> None:
    """Why Triton's random_data warm-up cannot be used on these models."""
    module = torch.jit.load(str(builder.build(tmp_path, "shortform_ranker")))
    with pytest.raises(Exception, match=r"index out of range|out of bounds|Index"):
        module(torch.full((1, 20), 2**40, dtype=torch.int64), torch.zeros(1, 32))
