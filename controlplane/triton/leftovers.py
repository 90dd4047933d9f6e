"""What a dead tritonserver leaves behind: Python backend stubs and shared-memory regions.

Both outlive a server killed outright (SIGKILL, OOM killer, segfault): the stubs, one process
per model instance, keep their memory; the regions stay in /dev/shm (tmpfs, i.e. RAM). The
next start, and the supervisor after a crash, remove them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def reap_stubs(backend_dir: Path) -> list[int]:
    """Kill Python backend stubs started from ``backend_dir`` by a server that is gone.

    A control plane killed outright takes its Triton down (PR_SET_PDEATHSIG), but the
    stubs, one process per model instance, live on holding their memory. They are ours when
    their executable is our backend directory's stub.
    """
    stub = str(backend_dir / "python" / "triton_python_backend_stub")
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            if argv0 != stub:
                continue
            os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, UnicodeDecodeError):
            continue
        killed.append(int(proc.name))
    return killed


#: the Python backend's shared-memory regions are ``triton_<backend>_backend_shm_region_<uuid>``
#: (``<backend>``: ``python``, or a Python-based backend's name such as our ``torchscript``),
#: unless ``--backend-config=python,shm-region-prefix-name=<prefix>`` says otherwise
SHM_PREFIX = "triton_python_backend_shm_region_"


def is_region(name: str, prefix: str | None = None) -> bool:
    if prefix:
        return name.startswith(prefix)
    return name.startswith("triton_") and "_backend_shm_region_" in name


def _shm_in_use(shm_dir: Path) -> set[str]:
    """Names under ``shm_dir`` that a live process has open or mapped."""
    used: set[str] = set()
    prefix = str(shm_dir) + "/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (proc / "maps").read_text(errors="replace").splitlines():
                parts = line.split(maxsplit=5)
                path = parts[5] if len(parts) == 6 else ""
                if path.startswith(prefix):
                    used.add(path[len(prefix):].removesuffix(" (deleted)"))
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith(prefix):
                        used.add(target[len(prefix):])
    return used


def reap_shm(prefix: str | None = None, shm_dir: Path = Path("/dev/shm")) -> list[str]:
    """Remove the Python backend's shared-memory files that no live process uses.

    A server that dies (SIGKILL, segfault) leaves one region per model instance in
    ``/dev/shm`` (tmpfs: RAM). Only files of ours (same uid) that no process has open or
    mapped go: another Triton on this host, alive, keeps its regions. Names are listed before
    /proc is read, so a region created meanwhile is not yet a candidate.
    """
    try:
        candidates = [p for p in shm_dir.iterdir()
                      if is_region(p.name, prefix) and p.is_file()
                      and p.stat().st_uid == os.getuid()]
    except OSError:
        return []
    if not candidates:
        return []
    used = _shm_in_use(shm_dir)
    removed = []
    for path in candidates:
        if path.name in used:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.name)
    return removed


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
