"""Shared-memory regions of a dead tritonserver are removed; those a live process uses stay."""

from __future__ import annotations

import mmap
from pathlib import Path

from controlplane.triton.leftovers import SHM_PREFIX, reap_shm


def test_only_regions_no_live_process_uses_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{SHM_PREFIX}dead-server"
    opened = tmp_path / f"{SHM_PREFIX}open-by-us"
    mapped = tmp_path / f"{SHM_PREFIX}mapped-by-us"
    other = tmp_path / "not_a_triton_region"
    plugin = tmp_path / "triton_torchscript_backend_shm_region_dead"  # a Python-based backend
    for path in (dead, opened, mapped, other, plugin):
        path.write_bytes(b"\0" * 4096)
    with opened.open("rb"), mapped.open("r+b") as fh:
        region = mmap.mmap(fh.fileno(), 4096)
        fh.close()  # only the mapping keeps it in use now
        try:
            assert sorted(reap_shm(None, tmp_path)) == sorted([dead.name, plugin.name])
        finally:
            region.close()
    assert not dead.exists() and opened.exists() and mapped.exists() and other.exists()
    assert sorted(reap_shm(SHM_PREFIX, tmp_path)) == sorted([opened.name, mapped.name])
    custom = tmp_path / "mine_1"
    custom.write_bytes(b"")
    assert reap_shm("mine_", tmp_path) == [custom.name]  # a configured prefix


def test_a_missing_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert reap_shm(None, tmp_path / "absent") == []
