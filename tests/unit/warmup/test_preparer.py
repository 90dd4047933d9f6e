"""What a load carries: only proven samples, nothing for the kinds that cannot take any, and
never again a version Triton rejected (real SQLite, a model repository on disk, no Triton)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from controlplane.admin.schemas import WarmupConfigView
from controlplane.config import ModelSettings, WarmupOptions
from controlplane.lifecycle.states import LoadPlan
from controlplane.store.database import Database
from controlplane.tensors import TensorShape
from controlplane.traffic.observation import Observation
from controlplane.traffic.store import TrafficStore
from controlplane.triton.repository import ModelRepository
from controlplane.warmup.configs import FAILED, PROVEN, REJECTED, WarmupStore
from controlplane.warmup.preparer import WarmupPreparer
from controlplane.warmup.types import InputData, WarmupPlan, WarmupSample

CONFIG = '''
    name: "{name}"
    backend: "python"
    max_batch_size: 8
    input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
    output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
    {extra}
'''
BATCHER = "dynamic_batching { }"


def add(repo: Path, name: str, extra: str = BATCHER, weights: int = 0) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(
        textwrap.dedent(CONFIG.format(name=name, extra=extra)))
    (repo / name / "1" / "model.py").write_text("# model\n")
    if weights:
        with (repo / name / "1" / "weights.bin").open("wb") as fh:
            fh.truncate(weights)  # sparse


def plan(*batches: int, file: bool = False) -> WarmupPlan:
    samples = tuple(
        WarmupSample(f"s{i}_b{b}", b, {"x": InputData("FP32", (4,), "file" if file else "zero",
                                                       f"s{i}_x.bin" if file else None)}, 3)
        for i, b in enumerate(batches))
    files = {f"warmup/s{i}_x.bin": b"\0" * 16 for i in range(len(batches))} if file else {}
    return WarmupPlan(samples, files, 1.0, False, ("from traffic",),
                      frozenset({"x:FP32:1x4"}))


@pytest.fixture
def parts(tmp_path: Path, database: Database) -> tuple[Path, WarmupPreparer]:
    repo = tmp_path / "repo"
    repo.mkdir()
    preparer = WarmupPreparer(
        repository=ModelRepository(repo), warmups=WarmupStore(database),
        traffic=TrafficStore(database, "default"),
        options=WarmupOptions(min_requests=1, max_file_override_bytes=1 << 20),
        models={"off": ModelSettings(warmup=False)})
    return repo, preparer


async def test_only_proven_samples_are_applied(parts: tuple[Path, WarmupPreparer]) -> None:
    repo, preparer = parts
    add(repo, "m")
    spec = preparer.repository.spec("m")
    stored = preparer.warmups.save("m", plan(1, 2, 4), "traffic")
    keys = [stored.sample_key(s) for s in stored.samples]
    first = await preparer.prepare(spec)
    # nothing proven: config.pbtxt as on disk, every sample waits for its probe
    assert first.config is None and first.files is None
    assert first.details is not None and first.details["warmup_pending"] == 3
    assert [s["name"] for s in preparer.applied["m"].pending] == ["s0_b1", "s1_b2", "s2_b4"]
    await preparer.record_probes("m", {keys[0]: None, keys[1]: "out of memory"})
    second = await preparer.prepare(spec)
    assert second.config is not None and second.files is None
    assert [s["name"] for s in second.config["model_warmup"]] == ["s0_b1"]
    assert [s["name"] for s in preparer.applied["m"].pending] == ["s2_b4"]  # b2 failed
    assert preparer.warmups.proofs("m") == {keys[0]: PROVEN, keys[1]: FAILED}
    # the repository's config is the base; nothing else changes
    assert {k: v for k, v in second.config.items() if k != "model_warmup"} == spec.config


async def test_batch_samples_without_a_dynamic_batcher_are_only_probes(
        parts: tuple[Path, WarmupPreparer]) -> None:
    repo, preparer = parts
    add(repo, "m", extra="")
    stored = preparer.warmups.save("m", plan(1, 2), "traffic")
    await preparer.record_probes("m", {stored.sample_key(s): None for s in stored.samples})
    result = await preparer.prepare(preparer.repository.spec("m"))
    # Triton would hand it 2 requests in one execute, which nothing else does without a
    # dynamic batcher: batch 2 warms by a probe only
    assert result.config is not None
    assert [s["batch_size"] for s in result.config["model_warmup"]] == [1]
    assert [s["batch_size"] for s in preparer.applied["m"].probe_only] == [2]
    assert result.details is not None and result.details["warmup_probe_only"] == 1


async def test_a_rejected_version_is_never_applied_again(
        parts: tuple[Path, WarmupPreparer]) -> None:
    repo, preparer = parts
    add(repo, "m")
    spec = preparer.repository.spec("m")
    stored = preparer.warmups.save("m", plan(1, 2), "traffic")
    await preparer.record_probes("m", {stored.sample_key(s): None for s in stored.samples})
    applied = await preparer.prepare(spec)
    assert applied.config is not None and len(applied.config["model_warmup"]) == 2
    reason = "failed to run warmup sample 's1_b2': boom"
    await preparer.rejected("m", applied, reason)

    latest = preparer.warmups.latest("m")
    assert latest is not None and latest.rejected_at is not None
    assert latest.rejected_reason == reason
    again = await preparer.prepare(spec)
    assert again.config is None and again.details is not None
    assert again.details["warmup"] == "none: v1 was rejected by Triton"
    # the sample Triton named is rejected for good; the other stays proven
    states = preparer.warmups.proofs("m")
    assert sorted(states.values()) == [PROVEN, REJECTED]
    # an identical regeneration is the rejected version, not a new one to apply
    assert preparer.warmups.save("m", plan(1, 2), "drift").version == 1
    view = WarmupConfigView.of(preparer.warmups.latest("m"))  # type: ignore[arg-type]
    assert view.rejected and view.rejected_reason == reason
    assert "# REJECTED by Triton" in view.pbtxt
    # a different plan is a new version; its rejected sample never enters model_warmup
    fresh = preparer.warmups.save("m", plan(2, 1), "drift")
    assert fresh.version == 2 and fresh.rejected_at is None
    await preparer.record_probes("m", {fresh.sample_key(s): None for s in fresh.samples})
    third = await preparer.prepare(spec)
    assert third.config is not None
    assert [s["batch_size"] for s in third.config["model_warmup"]] == [1]


async def test_rejection_of_a_load_without_our_warmup_marks_nothing(
        parts: tuple[Path, WarmupPreparer]) -> None:
    repo, preparer = parts
    add(repo, "m")
    preparer.warmups.save("m", plan(1), "traffic")
    await preparer.prepare(preparer.repository.spec("m"))  # nothing proven: plain
    await preparer.rejected("m", LoadPlan(config={"name": "m"}), "placement refused")
    latest = preparer.warmups.latest("m")
    assert latest is not None and latest.rejected_at is None


@pytest.mark.parametrize(("name", "extra", "why"), [
    ("ens", 'platform: "ensemble"', "ensemble"),
    ("seq", "sequence_batching { }", "stateful (sequence_batching)"),
    ("dec", "model_transaction_policy { decoupled: true }", "decoupled"),
    ("off", "", "off for this model (models.off.warmup = false)"),
])
async def test_kinds_without_generated_warmup_load_plain(
        parts: tuple[Path, WarmupPreparer], name: str, extra: str, why: str) -> None:
    repo, preparer = parts
    add(repo, name, extra)
    spec = preparer.repository.spec(name)
    preparer.warmups.save(name, plan(1), "traffic")  # even with samples stored
    result = await preparer.prepare(spec)
    assert result.config is None and result.files is None
    assert result.details is not None and set(result.details) == {"warmup"}
    assert result.details["warmup"].startswith(f"none: {why}")
    assert preparer.applied[name].no_probe is not None
    regenerated = preparer.regenerate(spec, "admin")
    assert regenerated.samples == [] and why in regenerated.notes[0]


async def test_data_files_over_the_bound_are_left_out(
        parts: tuple[Path, WarmupPreparer]) -> None:
    repo, preparer = parts
    add(repo, "small")
    add(repo, "large", weights=3 << 20)  # a 3 MiB sparse file; the bound is 1 MiB
    for name in ("small", "large"):
        stored = preparer.warmups.save(name, plan(1, file=True), "traffic")
        await preparer.record_probes(name, {stored.sample_key(s): None for s in stored.samples})
    small = await preparer.prepare(preparer.repository.spec("small"))
    assert small.files is not None and set(small.files) == {
        "1/model.py", "warmup/s0_x.bin"}
    large = await preparer.prepare(preparer.repository.spec("large"))
    assert large.config is None and large.files is None
    assert large.details is not None
    assert "max_file_override_bytes 1,048,576" in large.details["warmup_files_skipped"]


async def test_completed_config_replaces_one_that_names_no_inputs(
        parts: tuple[Path, WarmupPreparer]) -> None:
    repo, preparer = parts
    (repo / "auto" / "1").mkdir(parents=True)
    (repo / "auto" / "config.pbtxt").write_text(
        'name: "auto"\nbackend: "python"\nmax_batch_size: 8\n')
    spec = preparer.repository.spec("auto")
    first = await preparer.prepare(spec)
    assert first.config is None and first.details is not None
    assert first.details["warmup"].startswith("none yet: config.pbtxt names no inputs")
    preparer.remember_completed("auto", {
        "name": "auto", "backend": "python", "max_batch_size": 8,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "model_warmup": [{"name": "added-by-a-previous-load", "batch_size": 1}]})
    effective = preparer.effective(spec)
    assert [t.name for t in effective.inputs] == ["x"]
    assert "model_warmup" not in effective.config  # config.pbtxt has none of its own
    TrafficStore(preparer.warmups.db, "default").write([Observation(
        "auto", "", (TensorShape("x", "FP32", (1, 4)),), time.time(), 0.001, "OK", False,
        None)] * 3)
    stored = preparer.regenerate(spec, "traffic")
    assert [list(s["inputs"]) for s in stored.samples] == [["x"]]
