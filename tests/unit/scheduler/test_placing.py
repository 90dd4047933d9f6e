"""The GPU placement rule at load time (no GPU here: the configs only say KIND_GPU, and the
plan that would move them is given; what Triton does with the override is not exercised)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from controlplane.lifecycle.states import LoadPlan
from controlplane.scheduler.levels import Level
from controlplane.scheduler.placing import PlacingPreparer
from controlplane.triton.repository import ModelRepository, ModelSpec


def _repo(tmp_path: Path, kind: str) -> ModelRepository:
    model = tmp_path / "m"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.pt").write_bytes(b"\0" * 4096)
    (model / "config.pbtxt").write_text(textwrap.dedent(f'''
        name: "m"
        backend: "torchscript"
        max_batch_size: 4
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        instance_group [ {{ kind: {kind} count: 2 gpus: [ 0 ] }} ]'''))
    return ModelRepository(tmp_path)


class _Warmup:
    async def prepare(self, spec: ModelSpec) -> LoadPlan:
        return LoadPlan(config={**spec.config, "model_warmup": []}, details={"w": 1})


async def test_a_gpu_model_the_plan_did_not_move_loads_as_configured(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "KIND_GPU")
    plan = await PlacingPreparer(None, repo, lambda _: None).prepare(repo.spec("m"))
    assert plan.config is None  # no override at all: Triton reads config.pbtxt
    assert plan.details is not None and plan.details["device"] == "gpu"
    kept = await PlacingPreparer(None, repo, lambda _: Level.GPU).prepare(repo.spec("m"))
    assert kept.config is None


async def test_only_a_move_off_the_gpu_overrides_the_instance_group(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "KIND_GPU")
    moved = await PlacingPreparer(_Warmup(), repo, lambda _: Level.CPU).prepare(repo.spec("m"))
    assert moved.config is not None
    assert moved.config["instance_group"] == [{"kind": "KIND_CPU", "count": 2}]
    assert moved.config["model_warmup"] == []  # the inner plan's additions kept
    assert moved.details is not None and moved.details["device"] == "cpu"


async def test_a_cpu_model_is_never_moved_to_the_gpu(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "KIND_CPU")
    plan = await PlacingPreparer(None, repo, lambda _: Level.GPU).prepare(repo.spec("m"))
    assert plan.config is None
    assert plan.details is not None and plan.details["device"] == "cpu"
