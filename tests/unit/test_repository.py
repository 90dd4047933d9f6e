from __future__ import annotations

import time
from pathlib import Path

import pytest

from controlplane.errors import ConfigError, ModelNotFound
from controlplane.triton.repository import ModelRepository, json_to_pbtxt, parse_config
from tests.conftest import ROOT

EXAMPLES = ROOT / "model_repository"


def test_example_models_parse_into_specs() -> None:
    repo = ModelRepository(EXAMPLES)
    assert repo.names() == {
        "shortform_ranker", "longform_ranker", "premium_ranker", "query_encoder",
        "thumbnail_scorer", "history_ranker_export", "history_ranker_aoti",
        "history_ranker_compiled"}
    spec = repo.spec("longform_ranker")
    assert spec.backend == "torchscript"
    assert spec.max_batch_size == 32
    assert [(t.name, t.datatype, t.dims) for t in spec.inputs] == [
        ("watch_history", "INT64", (-1,)), ("context", "FP32", (32,))]
    assert spec.instance_kind == "KIND_CPU"
    assert spec.dynamic_batching
    assert spec.parameters == {"input_range.watch_history": "0:200000"}


def test_json_round_trip_keeps_what_triton_needs() -> None:
    spec = ModelRepository(EXAMPLES).spec("shortform_ranker")
    assert spec.config["input"][0]["data_type"] == "TYPE_INT64"
    again = parse_config(json_to_pbtxt(spec.config))
    assert [i.name for i in again.input] == ["user_history", "context"]
    assert again.max_batch_size == 64


def test_malformed_config_names_file_and_problem(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nmax_batch_size: "lots"\n')
    with pytest.raises(ConfigError, match=r"m/config.pbtxt.*max_batch_size"):
        ModelRepository(tmp_path).spec("m")


def test_name_must_match_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('name: "other"\n')
    with pytest.raises(ConfigError, match="does not match folder"):
        ModelRepository(tmp_path).spec("m")


def test_unknown_model_and_new_folders(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, rescan_interval_s=3600)
    assert repo.names() == frozenset()
    with pytest.raises(ModelNotFound):
        repo.spec("late")
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "config.pbtxt").write_text('backend: "python"\n')
    assert "late" in repo  # a miss rescans, whatever the interval
    assert repo.spec("late").backend == "python"


def test_spec_is_reread_when_config_changes(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    config = tmp_path / "m" / "config.pbtxt"
    config.write_text("max_batch_size: 4\n")
    repo = ModelRepository(tmp_path)
    assert repo.spec("m").max_batch_size == 4
    time.sleep(0.01)
    config.write_text("max_batch_size: 8\n")
    assert repo.spec("m").max_batch_size == 8


def test_files_are_everything_but_the_config(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "config.pbtxt").write_text("")
    (tmp_path / "m" / "1" / "model.pt").write_bytes(b"weights")
    (tmp_path / "m" / "warmup").mkdir()
    (tmp_path / "m" / "warmup" / "x").write_bytes(b"\0\0")
    assert ModelRepository(tmp_path).files("m") == {"1/model.pt": b"weights", "warmup/x": b"\0\0"}
