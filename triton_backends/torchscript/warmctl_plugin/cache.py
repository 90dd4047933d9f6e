"""The plugin's side of warmctl's compile cache: a directory the control plane owns.

Layout (the control plane reads, bounds and shows it: ``controlplane/compile_cache/store.py``)::

    $WARMCTL_COMPILE_CACHE_DIR/<model>/<key>.bin    torch.compiler.save_cache_artifacts() bytes
    $WARMCTL_COMPILE_CACHE_DIR/<model>/<key>.json   {"key", "fields", "bytes", "sha256",
                                                     "created"}
    $WARMCTL_COMPILE_CACHE_DIR/<model>/<key>.inductor/   TORCHINDUCTOR_CACHE_DIR of the loads
                                                     with this key (the compiled kernels)

``key`` is a digest of everything that makes artifacts unusable when it changes: torch, Triton
(the compiler package) and Python versions, device type, GPU model and capability, the CPU's
vector ISA, the model file's digest and the compile options. The ``.bin`` is written first and
the ``.json`` last, each by an atomic rename, so a reader that finds the ``.json`` finds its
``.bin`` complete; the sha256 in the ``.json`` catches anything else. A hit touches the
``.json`` (the control plane evicts the least recently used entries).
Unset ``WARMCTL_COMPILE_CACHE_DIR``: no cache, every load compiles (state ``disabled``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("warmctl.compile_cache")

ENV_DIR = "WARMCTL_COMPILE_CACHE_DIR"
ENV_MAX_ENTRY = "WARMCTL_COMPILE_CACHE_MAX_ENTRY_BYTES"
DEFAULT_MAX_ENTRY = 256 * 2**20
_VERSION = 1


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_fields(torch: Any, device: Any, model_path: str, opts: dict[str, Any]) -> dict[str, Any]:
    """What invalidates compiled artifacts (see the module docstring)."""
    try:
        triton_version: str | None = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = None
    gpu = None
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        gpu = f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"
    return {
        "layout": _VERSION,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "device": device.type,
        "gpu": gpu,
        "cpu_isa": str(torch.backends.cpu.get_cpu_capability()),
        "model_sha256": file_digest(model_path),
        "options": {k: opts[k] for k in ("mode", "dynamic", "backend")},
    }


class CompileCache:
    """One model's entry for one key. ``state`` after ``restore``: hit, miss, invalid
    (an entry was there but unusable: ignored, compiled afresh) or disabled."""

    def __init__(self, root: str | None, model: str, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
        self.dir = os.path.join(root, model) if root else None
        self.state = "disabled" if root is None else "miss"
        self.max_entry = int(os.environ.get(ENV_MAX_ENTRY) or DEFAULT_MAX_ENTRY)
        self._saved_sha: str | None = None

    def inductor_dir(self) -> str | None:
        """The entry's folder for inductor's on-disk cache (kernels built by g++/Triton)."""
        return None if self.dir is None else os.path.join(self.dir, f"{self.key}.inductor")

    def _paths(self) -> tuple[str, str]:
        assert self.dir is not None
        base = os.path.join(self.dir, self.key)
        return base + ".bin", base + ".json"

    def restore(self, torch: Any) -> int:
        """Load the entry's artifacts into torch's caches; bytes restored (0 unless a hit).
        Never raises: a bad entry is a warning and a miss."""
        if self.dir is None:
            return 0
        bin_path, meta_path = self._paths()
        if not os.path.exists(meta_path):
            return 0
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
            if meta.get("fields") != self.fields:
                raise ValueError("its key fields differ from this load's")
            with open(bin_path, "rb") as fh:
                data = fh.read()
            if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
                raise ValueError("its artifacts do not match their recorded sha256")
            if torch.compiler.load_cache_artifacts(data) is None:
                raise ValueError("torch found no artifacts in it")
        except Exception as exc:
            log.warning("compile cache entry %s ignored, compiling afresh: %s", meta_path, exc)
            self.state = "invalid"
            return 0
        os.utime(meta_path)
        self.state, self._saved_sha = "hit", meta["sha256"]
        return len(data)

    def save(self, torch: Any) -> int:
        """Write the process's artifacts as this key's entry; their size (0 if none were
        written). Never raises: a cache that cannot be written costs only the next compile."""
        if self.dir is None:
            return 0
        try:
            saved = torch.compiler.save_cache_artifacts()
            if saved is None:
                return 0
            data = saved[0]
            sha = hashlib.sha256(data).hexdigest()
            if sha == self._saved_sha:
                return len(data)
            if len(data) > self.max_entry:
                log.warning("compile artifacts of %d bytes exceed %s=%d: not cached",
                            len(data), ENV_MAX_ENTRY, self.max_entry)
                return 0
            os.makedirs(self.dir, exist_ok=True)
            bin_path, meta_path = self._paths()
            meta = {"key": self.key, "fields": self.fields, "bytes": len(data), "sha256": sha,
                    "created": time.time()}
            _write(bin_path, data)
            _write(meta_path, json.dumps(meta, indent=1).encode())
        except Exception as exc:
            log.warning("compile artifacts not saved: %s", exc)
            return 0
        self._saved_sha = sha
        return len(data)


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
