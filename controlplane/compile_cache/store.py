"""The compile cache's directory, seen from the control plane: list, bound, forget.

Triton's plugin writes the entries (``triton_backends/torchscript/warmctl_plugin/cache.py``
has the layout); this side never writes artifacts, it only reads their metadata and deletes.
A directory rather than rows in SQLite because the writer is Triton: several Triton instances
(a fleet) share one volume, and a load restores its artifacts without a round trip through
the control plane.

Bounds: at most ``keep_per_model`` entries per model (an entry per key: a torch upgrade or a
new model file leaves the old one unusable), and ``max_bytes`` over all, least recently used
(a hit touches its ``.json``) going first. An entry's size counts its compiled kernels
(``<key>.inductor/``). Leftovers of crashed writers are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.config import Settings

log = logging.getLogger(__name__)

ENV_DIR = "WARMCTL_COMPILE_CACHE_DIR"
ENV_MAX_ENTRY = "WARMCTL_COMPILE_CACHE_MAX_ENTRY_BYTES"
MB = 2**20
#: a writer's temporary file older than this was left by a crash
_STALE_TMP_S = 600.0


@dataclass(frozen=True)
class CacheEntry:
    """One model's compiled artifacts for one key."""

    model: str
    key: str
    #: size of the artifacts (the ``.bin``) and of the compiled kernels (``.inductor/``)
    bytes: int
    created: datetime
    #: the last load that restored it (its creation if none did yet)
    last_used: datetime
    #: what the key was made of: torch, triton, device, gpu, cpu_isa, model_sha256, options
    fields: dict[str, Any]


class CompileCacheStore:
    def __init__(self, root: Path, *, max_bytes: int, max_entry_bytes: int,
                 keep_per_model: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.keep_per_model = keep_per_model

    @classmethod
    def from_settings(cls, settings: Settings) -> CompileCacheStore | None:
        """None when ``[compile_cache] enabled = false`` (every load compiles afresh)."""
        c = settings.compile_cache
        if not c.enabled:
            return None
        root = (c.dir or settings.data_dir / "compile_cache").expanduser().resolve()
        return cls(root, max_bytes=int(c.max_mb * MB), max_entry_bytes=int(c.max_entry_mb * MB),
                   keep_per_model=c.keep_per_model)

    def environment(self) -> dict[str, str]:
        """What the embedded Triton's environment needs for the plugin to use this store."""
        return {ENV_DIR: str(self.root), ENV_MAX_ENTRY: str(self.max_entry_bytes)}

    def entries(self, model: str | None = None) -> list[CacheEntry]:
        """Complete entries (of ``model``, or all), most recently used first. Unreadable
        metadata is skipped (a writer in the middle of replacing it)."""
        if not self.root.is_dir():
            return []
        folders = [self.root / model] if model else [p for p in self.root.iterdir() if p.is_dir()]
        found = []
        for folder in folders:
            if not folder.is_dir():
                continue
            for meta_path in folder.glob("*.json"):
                entry = _read(folder.name, meta_path)
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries())

    def forget(self, model: str) -> int:
        """Delete every entry of ``model`` (the next load compiles afresh); how many."""
        entries = self.entries(model)
        for entry in entries:
            self._remove(entry)
        return len(entries)

    def prune(self) -> list[CacheEntry]:
        """Apply the bounds (see the module docstring); the entries removed."""
        removed: list[CacheEntry] = []
        entries = self.entries()
        per_model: dict[str, int] = {}
        kept = []
        for entry in entries:
            per_model[entry.model] = per_model.get(entry.model, 0) + 1
            if per_model[entry.model] > self.keep_per_model:
                removed.append(entry)
            else:
                kept.append(entry)
        total = sum(e.bytes for e in kept)
        for entry in reversed(kept):  # least recently used first
            if total <= self.max_bytes:
                break
            removed.append(entry)
            total -= entry.bytes
        for entry in removed:
            self._remove(entry)
            log.info("compile cache: removed %s/%s (%d bytes)", entry.model, entry.key,
                     entry.bytes)
        self._remove_stale_tmp()
        return removed

    def _remove(self, entry: CacheEntry) -> None:
        base = self.root / entry.model / entry.key
        for suffix in (".json", ".bin"):  # metadata first: no reader sees a half entry
            base.with_suffix(suffix).unlink(missing_ok=True)
        shutil.rmtree(base.with_suffix(".inductor"), ignore_errors=True)

    def _remove_stale_tmp(self) -> None:
        """Temporary files of a crashed writer, and kernel folders whose entry is gone (a
        load that crashed before saving, an entry removed while a load was writing)."""
        now = time.time()
        for path in [*self.root.glob("*/*.tmp"), *self.root.glob("*/*.inductor")]:
            try:
                if now - path.stat().st_mtime <= _STALE_TMP_S:
                    continue
                if path.suffix == ".tmp":
                    path.unlink()
                elif not path.with_suffix(".json").exists():
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue


def _read(model: str, meta_path: Path) -> CacheEntry | None:
    try:
        meta = json.loads(meta_path.read_text())
        used = meta_path.stat().st_mtime
        size = os.stat(meta_path.with_suffix(".bin")).st_size + _tree_bytes(
            meta_path.with_suffix(".inductor"))
        return CacheEntry(
            model=model, key=str(meta["key"]), bytes=size,
            created=datetime.fromtimestamp(float(meta["created"]), UTC),
            last_used=datetime.fromtimestamp(used, UTC), fields=dict(meta.get("fields", {})))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _tree_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
