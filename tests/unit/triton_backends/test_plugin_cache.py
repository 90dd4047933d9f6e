"""The plugin's side of the compile cache: keys, save, restore; a bad entry is a miss, never an
error (torch's real ``load_cache_artifacts``; no compiling)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from warmctl_plugin import cache, compiled

OPTS = {"mode": "default", "dynamic": True, "backend": "inductor", "fallback": "eager"}


def fields(tmp_path: Path, content: bytes = b"weights") -> dict[str, Any]:
    model = tmp_path / "model.pt2"
    model.write_bytes(content)
    return cache.key_fields(torch, torch.device("cpu"), str(model), OPTS)


def saving(data: bytes | None) -> Any:
    """A torch whose save_cache_artifacts returns ``data``."""
    return SimpleNamespace(compiler=SimpleNamespace(
        save_cache_artifacts=lambda: None if data is None else (data, None)))


def test_the_key_changes_with_what_invalidates_artifacts(tmp_path: Path) -> None:
    base = fields(tmp_path)
    assert base["torch"] == torch.__version__ and base["device"] == "cpu"
    key = cache.CompileCache(str(tmp_path), "m", base).key
    assert cache.CompileCache(str(tmp_path), "m", dict(base)).key == key
    assert cache.CompileCache(str(tmp_path), "m", fields(tmp_path, b"retrained")).key != key
    other_torch = {**base, "torch": "2.99.0"}
    assert cache.CompileCache(str(tmp_path), "m", other_torch).key != key
    other_mode = {**base, "options": {**base["options"], "mode": "max-autotune"}}
    assert cache.CompileCache(str(tmp_path), "m", other_mode).key != key


def test_save_writes_once_and_respects_the_size_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = cache.CompileCache(str(tmp_path / "c"), "m", fields(tmp_path))
    assert entry.save(saving(None)) == 0
    assert entry.save(saving(b"artifacts")) == 9
    meta_path = tmp_path / "c" / "m" / f"{entry.key}.json"
    meta = json.loads(meta_path.read_text())
    assert meta["bytes"] == 9 and meta["fields"] == entry.fields
    assert (tmp_path / "c" / "m" / f"{entry.key}.bin").read_bytes() == b"artifacts"
    os.utime(meta_path, (1, 1))
    assert entry.save(saving(b"artifacts")) == 9  # unchanged: not rewritten
    assert meta_path.stat().st_mtime == 1
    monkeypatch.setenv(cache.ENV_MAX_ENTRY, "4")
    small = cache.CompileCache(str(tmp_path / "d"), "m", fields(tmp_path))
    assert small.save(saving(b"artifacts")) == 0 and not (tmp_path / "d").exists()
    assert cache.CompileCache(None, "m", fields(tmp_path)).save(saving(b"x")) == 0


def test_bad_entries_are_misses_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    f = fields(tmp_path)
    fresh = cache.CompileCache(str(tmp_path / "c"), "m", f)
    assert fresh.restore(torch) == 0 and fresh.state == "miss"
    assert cache.CompileCache(None, "m", f).state == "disabled"

    fresh.save(saving(b"not torch artifacts"))
    # sha256 right, content not torch's: load_cache_artifacts refuses it
    garbage = cache.CompileCache(str(tmp_path / "c"), "m", f)
    assert garbage.restore(torch) == 0 and garbage.state == "invalid"
    # truncated (a crash, a full disk)
    bin_path = tmp_path / "c" / "m" / f"{fresh.key}.bin"
    bin_path.write_bytes(b"not torch")
    truncated = cache.CompileCache(str(tmp_path / "c"), "m", f)
    assert truncated.restore(torch) == 0 and truncated.state == "invalid"
    # an entry whose recorded key fields differ from this load's (copied from elsewhere)
    meta_path = bin_path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "fields": {**f, "torch": "0.0"}}))
    mismatched = cache.CompileCache(str(tmp_path / "c"), "m", f)
    assert mismatched.restore(torch) == 0 and mismatched.state == "invalid"
    assert [r.message for r in caplog.records if "ignored, compiling afresh" in r.message]
    assert "key fields differ" in caplog.records[-1].message


def test_a_good_entry_is_a_hit(tmp_path: Path) -> None:
    f = fields(tmp_path)
    writer = cache.CompileCache(str(tmp_path), "m", f)
    writer.save(saving(b"artifacts"))
    meta_path = tmp_path / "m" / f"{writer.key}.json"
    os.utime(meta_path, (1, 1))
    loaded: list[bytes] = []
    fake = SimpleNamespace(compiler=SimpleNamespace(
        load_cache_artifacts=lambda data: loaded.append(data) or "info"))
    reader = cache.CompileCache(str(tmp_path), "m", f)
    assert reader.restore(fake) == 9 and reader.state == "hit" and loaded == [b"artifacts"]
    assert meta_path.stat().st_mtime > 1  # last used: the store evicts by it


def test_compile_options_are_validated() -> None:
    assert compiled.options({}) is None
    assert compiled.options({"torch_compile": "false"}) is None
    assert compiled.options({"torch_compile": "true"}) == {
        "mode": "default", "dynamic": None, "fallback": "eager", "backend": "inductor"}
    opts = compiled.options({"torch_compile": "true", "torch_compile_dynamic": "true",
                             "torch_compile_mode": "max-autotune",
                             "torch_compile_fallback": "fail"})
    assert opts is not None and opts["dynamic"] is True and opts["fallback"] == "fail"
    with pytest.raises(ValueError, match="torch_compile_mode='fast': expected one of"):
        compiled.options({"torch_compile": "true", "torch_compile_mode": "fast"})
    with pytest.raises(ValueError, match="torch_compile_dynamic='maybe'"):
        compiled.options({"torch_compile": "true", "torch_compile_dynamic": "maybe"})
    with pytest.raises(ValueError, match="torch_compile_fallback='retry'"):
        compiled.options({"torch_compile": "true", "torch_compile_fallback": "retry"})
