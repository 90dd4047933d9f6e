"""Which backends a model needs, and the models an embedded Triton cannot serve."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controlplane.triton.distribution import backend_problem, missing_backends
from controlplane.triton.repository import ModelRepository

EMBEDDED = frozenset({"python", "torchscript"})


@pytest.mark.parametrize("backend", ["python", "torchscript", "ensemble", ""])
def test_backends_we_have_and_the_core_ensemble_need_nothing(backend: str) -> None:
    assert backend_problem(backend, EMBEDDED) is None


def test_a_missing_backend_is_named() -> None:
    assert backend_problem("onnxruntime", EMBEDDED) == (
        "its config names backend 'onnxruntime', which this Triton does not have (it has: "
        "python, torchscript; backends_dir adds Python-based ones)")
    assert backend_problem("pytorch_libtorch", EMBEDDED) == (
        "platform 'pytorch_libtorch' needs backend 'pytorch', which this Triton does not have "
        "(it has: python, torchscript; backends_dir adds Python-based ones)")
    assert backend_problem("pytorch_libtorch", EMBEDDED | {"pytorch"}) is None


def test_models_naming_a_missing_backend_are_reported_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backends = tmp_path / "backends"
    for name in EMBEDDED:
        (backends / name).mkdir(parents=True)
    repo = tmp_path / "repo"
    for name, line in (("plain", 'backend: "python"'), ("onnx", 'backend: "onnxruntime"'),
                       ("trt", 'platform: "tensorrt_plan"'), ("chain", 'platform: "ensemble"')):
        (repo / name).mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\n{line}\n')
    with caplog.at_level(logging.WARNING):
        missing = missing_backends(ModelRepository(repo), backends)
    assert sorted(missing) == ["onnx", "trt"]
    assert missing["trt"].startswith("platform 'tensorrt_plan' needs backend 'tensorrt'")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "model 'onnx' will not load", "model 'trt' will not load"]
