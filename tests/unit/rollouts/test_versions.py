"""The version pin a load carries, and what a rollout's reload leaves out."""

from __future__ import annotations

from pathlib import Path

from controlplane.lifecycle.states import LoadPlan
from controlplane.rollouts.versions import ModelVersions, VersionPreparer, without_files
from controlplane.store.database import Database
from controlplane.store.rollouts import RolloutStore
from controlplane.triton.repository import ModelRepository
from tests.support.versions import add_version


class Warmup:
    """A preparer that adds a warm-up with a data file and one without."""

    async def prepare(self, spec: object) -> LoadPlan:
        return LoadPlan(config={"name": "m", "model_warmup": [
            {"name": "file", "inputs": {"x": {"input_data_file": "warmup/x"}}},
            {"name": "zeros", "inputs": {"x": {"zero_data": True}}}]},
            files={"warmup/x": b"\0" * 4}, details={"warmup": "2 samples"})


async def test_pins_follow_the_record_and_a_rollout_reload_sends_no_files(
        tmp_path: Path, database: Database) -> None:
    repo = tmp_path / "repo"
    add_version(repo, "m", "1")
    repository = ModelRepository(repo)
    versions = ModelVersions(RolloutStore(database), repository)
    preparer = VersionPreparer(Warmup(), versions)
    spec = repository.spec("m")
    plan = await preparer.prepare(spec)
    assert "version_policy" not in (plan.config or {})  # what plain Triton loads anyway
    assert versions.active("m") == "1"  # recorded at the first load
    add_version(repo, "m", "2")
    plan = await preparer.prepare(spec)  # a new folder is not served unasked
    assert plan.config is not None
    assert plan.config["version_policy"] == {"specific": {"versions": [1]}}
    assert plan.fallback is not None and plan.fallback["version_policy"] == {
        "specific": {"versions": [1]}}
    await versions.set("m", "1", "2")
    versions.reloading.add("m")
    plan = await preparer.prepare(spec)
    assert plan.config is not None and plan.files is None
    assert plan.config["version_policy"] == {"specific": {"versions": [1, 2]}}
    assert [w["name"] for w in plan.config["model_warmup"]] == ["zeros"]
    assert "left out" in (plan.details or {})["warmup_files"]


def test_without_files_keeps_a_plan_without_any() -> None:
    plan = LoadPlan(config={"name": "m"})
    assert without_files(plan) is plan
