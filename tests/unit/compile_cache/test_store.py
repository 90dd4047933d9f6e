"""The compile cache directory as the control plane sees it: entries, bounds, cold starts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

from controlplane.compile_cache.cold_start import ColdStarts
from controlplane.compile_cache.store import CompileCacheStore
from controlplane.config import load_settings


def put(root: Path, model: str, key: str, size: int, used: float,
        model_sha: str = "abc") -> None:
    """An entry as the plugin writes it (warmctl_plugin/cache.py), last used at ``used``."""
    folder = root / model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.bin").write_bytes(b"x" * size)
    meta = folder / f"{key}.json"
    meta.write_text(json.dumps({"key": key, "bytes": size, "sha256": "-", "created": used - 5,
                                "fields": {"torch": "2.13.0", "model_sha256": model_sha}}))
    os.utime(meta, (used, used))


def store(root: Path, **bounds: int) -> CompileCacheStore:
    return CompileCacheStore(root, max_bytes=bounds.get("max_bytes", 10_000),
                             max_entry_bytes=1000, keep_per_model=bounds.get("keep", 2))


def test_entries_newest_use_first_and_half_written_ones_skipped(tmp_path: Path) -> None:
    put(tmp_path, "a", "k1", 10, used=1000)
    put(tmp_path, "a", "k2", 20, used=2000)
    put(tmp_path, "b", "k3", 30, used=1500)
    (tmp_path / "a" / "k4.json").write_text("{not json")
    (tmp_path / "a" / "k5.json").write_text(json.dumps({"key": "k5", "created": 1}))  # no .bin
    s = store(tmp_path)
    assert [e.key for e in s.entries("a")] == ["k2", "k1"]
    assert [e.key for e in s.entries()] == ["k2", "k3", "k1"]
    assert s.entries("a")[0].bytes == 20 and s.entries("a")[0].fields["torch"] == "2.13.0"
    assert s.total_bytes() == 60 and s.entries("missing") == []
    assert store(tmp_path / "nowhere").entries() == []


def test_prune_keeps_per_model_then_evicts_least_recently_used(tmp_path: Path) -> None:
    for i in range(3):
        put(tmp_path, "a", f"a{i}", 100, used=1000 + i)
    put(tmp_path, "b", "b0", 100, used=500)
    put(tmp_path, "c", "c0", 100, used=3000)
    stale = tmp_path / "c" / "c1.bin.123.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (1, 1))
    fresh_tmp = tmp_path / "c" / "c2.bin.124.tmp"
    fresh_tmp.write_bytes(b"being written")
    kernels = tmp_path / "a" / "a0.inductor" / "x"
    kernels.mkdir(parents=True)
    (kernels / "kernel.so").write_bytes(b"k" * 50)
    orphan = tmp_path / "c" / "gone.inductor"  # a load that crashed before saving
    orphan.mkdir()
    os.utime(orphan, (1, 1))
    assert [e.bytes for e in store(tmp_path).entries("a")][-1] == 150  # kernels count
    removed = store(tmp_path, keep=2, max_bytes=300).prune()
    # a0: third of model a; b0: least recently used while over 300 bytes
    assert sorted(e.key for e in removed) == ["a0", "b0"]
    assert sorted(e.key for e in store(tmp_path).entries()) == ["a1", "a2", "c0"]
    assert not (tmp_path / "a" / "a0.bin").exists()
    assert not (tmp_path / "a" / "a0.inductor").exists() and not orphan.exists()
    assert not stale.exists() and fresh_tmp.exists()


def test_forget_and_settings(tmp_path: Path) -> None:
    put(tmp_path, "a", "k1", 10, used=1000)
    s = store(tmp_path)
    assert s.forget("a") == 1 and s.entries("a") == []
    settings = load_settings(data_dir=tmp_path, compile_cache={"max_mb": 1, "max_entry_mb": 0.5})
    made = CompileCacheStore.from_settings(settings)
    assert made is not None and made.root == tmp_path / "compile_cache"
    assert made.environment() == {"WARMCTL_COMPILE_CACHE_DIR": str(tmp_path / "compile_cache"),
                                  "WARMCTL_COMPILE_CACHE_MAX_ENTRY_BYTES": str(2**19)}
    off = load_settings(data_dir=tmp_path, compile_cache={"enabled": False})
    assert CompileCacheStore.from_settings(off) is None


def test_cold_start_follows_the_cache_state(tmp_path: Path) -> None:
    repo, root = tmp_path / "repo", tmp_path / "cache"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "1" / "model.pt2").write_bytes(b"v1")
    digest = hashlib.sha256(b"v1").hexdigest()
    s = store(root)
    cold = ColdStarts(s, repo)
    # never compiled: the last measured load is all there is
    assert cold.expected_load_s("m", 3.0) == 3.0
    asyncio.run(cold.observe("m", 20.0, {"compile_cache": {"state": "miss"}}))
    asyncio.run(cold.observe("plain", 2.0, {"load_phases": {}}))  # no compile: ignored
    assert cold.measured("plain") == {}
    # no entry for the current file yet: the next load compiles
    assert cold.expected_load_s("m", 5.0) == 20.0
    put(root, "m", "k1", 10, used=time.time(), model_sha=digest)
    assert cold.cached("m")
    assert cold.expected_load_s("m", 5.0) == 5.0  # a hit was never measured: the last load
    asyncio.run(cold.observe("m", 6.0, {"compile_cache": {"state": "hit"}}))
    assert cold.expected_load_s("m", 99.0) == 6.0
    # a new model file: the entry cannot be restored, the cold start is a compiling one
    (repo / "m" / "1" / "model.pt2").write_bytes(b"v2 retrained")
    assert not cold.cached("m") and cold.expected_load_s("m", 6.0) == 20.0
    # the figures outlast a restart (kept beside the entries)
    assert ColdStarts(s, repo).measured("m") == {"uncached": 20.0, "cached": 6.0}
