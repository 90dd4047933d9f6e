from __future__ import annotations

import os
from pathlib import Path

from controlplane.scheduler.levels import (
    Level,
    evict,
    own_level,
    place,
    resident_fraction,
    stage,
    with_device,
)


def test_place_fills_the_gpu_by_value_density() -> None:
    placement = place([("a", 600, 1.0), ("b", 300, 5.0), ("c", 500, 3.0), ("d", 100, 0.5)],
                      gpu_budget_mb=900)
    # b (densest) and c fit 800 of 900; a does not fit anymore; d still does
    assert placement.devices == {"b": Level.GPU, "c": Level.GPU, "a": Level.CPU,
                                 "d": Level.GPU}
    # a move is explained; models kept where their config put them need no word
    assert set(placement.why) == {"a"}
    assert "600 MB" in placement.why["a"] and "100 MB" in placement.why["a"]


def test_without_a_gpu_budget_nothing_moves_and_configs_decide() -> None:
    # the default on a host without GPUs: a model's own instance_group kind stands
    placement = place([("a", 10, 1.0)], gpu_budget_mb=0)
    assert placement.device("a") is None and placement.devices == {}
    assert place([("a", 10, 1.0)], gpu_budget_mb=100).device("unknown") is None


def test_own_level_reads_the_config_kind() -> None:
    assert own_level("KIND_GPU") is Level.GPU
    assert own_level("KIND_CPU") is Level.CPU
    assert own_level("KIND_AUTO") is None


def test_with_device_keeps_counts_and_drops_gpu_ids_on_cpu() -> None:
    config = {"name": "m", "instance_group": [{"kind": "KIND_GPU", "count": 2, "gpus": [0]}]}
    assert with_device(config, Level.CPU)["instance_group"] == [{"kind": "KIND_CPU", "count": 2}]
    assert with_device({"name": "m"}, Level.GPU)["instance_group"] == [
        {"kind": "KIND_GPU", "count": 1}]
    assert config["instance_group"][0]["kind"] == "KIND_GPU"  # not mutated


def test_stage_and_evict_move_files_in_and_out_of_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(8 << 20))
    os.sync()
    assert evict([path]) == 8 << 20
    assert resident_fraction([path]) < 0.2
    assert stage([path]) == 8 << 20
    assert resident_fraction([path]) > 0.95
    assert stage([tmp_path / "missing"]) == 0 and resident_fraction([]) == 0.0
