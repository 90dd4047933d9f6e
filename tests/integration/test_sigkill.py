"""SIGKILL of ``warmctl serve`` leaves nothing behind: its tritonserver, the Python backend
stubs and their /dev/shm regions are gone within seconds, and the next start leaves no
stale region of its own.

warmctl runs under a parent that is a child subreaper and never reaps (as a container's
PID 1 that is not an init): the orphaned tritonserver then stays a zombie, and a stub's
``kill(server_pid, 0)`` check keeps succeeding. That is where stubs used to stay.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.triton.leftovers import reap_stubs
from controlplane.triton.process import free_port
from tests.support.repository import add_identity

#: a parent that adopts every orphan below it and never reaps one
NON_REAPING_PARENT = textwrap.dedent("""
    import ctypes, subprocess, sys, time
    ctypes.CDLL("libc.so.6").prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    child = subprocess.Popen(sys.argv[1:])
    print(child.pid, flush=True)
    time.sleep(3600)
""")


def _state(pid: int) -> str | None:
    """The process state letter (Z: zombie); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _running(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if proc.name.isdigit() and int(
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
    return found


def _regions(prefix: str) -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(prefix)}


def _wait(check: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(check())  # type: ignore[operator]


class Serve:
    """``warmctl serve`` under the non-reaping parent."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        script = tmp_path / "parent.py"
        script.write_text(NON_REAPING_PARENT)
        warmctl = Path(sys.executable).parent / "warmctl"
        self.log = (tmp_path / f"serve-{time.monotonic_ns()}.log").open("wb")
        self.parent = subprocess.Popen([sys.executable, str(script), str(warmctl), "serve"],
                                       env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                       stderr=self.log)
        assert self.parent.stdout is not None
        self.pid = int(self.parent.stdout.readline())
        self.admin = f"http://127.0.0.1:{env['WARMCTL_ADMIN__PORT']}"

    def ready(self, timeout_s: float = 90) -> None:
        def up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.admin}/readyz", timeout=2).status_code == 200
            return False
        assert _wait(up, timeout_s), "warmctl serve did not become ready"

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)  # a test that failed before killing it
        self.parent.kill()  # its zombies go with it (to PID 1, which reaps)
        self.parent.wait()
        assert self.parent.stdout is not None
        self.parent.stdout.close()
        self.log.close()


@pytest.fixture
def serve(tmp_path: Path, repo: Path) -> Iterator[tuple[type[Serve], dict[str, str], str]]:
    for name in ("a", "b"):
        add_identity(repo, name)
    prefix = f"wctest_{uuid.uuid4().hex[:8]}_"
    env = {**os.environ, "WARMCTL_DATA_DIR": str(tmp_path / "data"),
           "WARMCTL_MODEL_REPOSITORY": str(repo),
           "WARMCTL_ADMIN__PORT": str(free_port()), "WARMCTL_GATEWAY__PORT": str(free_port()),
           "WARMCTL_GATEWAY__HTTP_PORT": str(free_port()),
           "WARMCTL_SCHEDULER__ENABLED": "false",
           "WARMCTL_TRITON__EXTRA_ARGS": f'["--backend-config=python,shm-region-prefix-name='
                                         f'{prefix}"]'}
    env.pop("WARMCTL_CONFIG_FILE", None)
    yield Serve, env, prefix
    reap_stubs(tmp_path / "data" / "backends")  # whatever a failed test left
    for path in Path("/dev/shm").glob(f"{prefix}*"):
        path.unlink(missing_ok=True)


def test_sigkill_of_warmctl_leaves_no_process_or_shared_memory_behind(
        tmp_path: Path, serve: tuple[type[Serve], dict[str, str], str]) -> None:
    make, env, prefix = serve
    first = make(tmp_path, env)
    try:
        first.ready()
        for name in ("a", "b"):
            answer = httpx.post(f"{first.admin}/models/{name}/load", timeout=60)
            assert answer.status_code == 200 and answer.json()["state"] == "ready"
        [triton] = [p for p in _children(first.pid) if "tritonserver" in
                    Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].decode()]
        stubs = _children(triton)
        watchdogs = [p for p in _children(first.pid) if p != triton]
        regions = _regions(prefix)
        assert len(stubs) == 2 and len(regions) == 2
        t_kill = time.monotonic()
        os.kill(first.pid, signal.SIGKILL)
        assert _wait(lambda: not any(_running(p) for p in (triton, *stubs)), 10)
        assert _wait(lambda: not _regions(prefix), 10)
        gone_after = time.monotonic() - t_kill
        assert len(watchdogs) == 1  # it did its work, and ends
        assert _wait(lambda: not _running(watchdogs[0]), 5)
        assert _state(triton) == "Z"  # unreaped, as its parent is: the case stubs stayed in
        assert gone_after < 10
        second = make(tmp_path, env)  # same data directory
        try:
            second.ready()
            answer = httpx.post(f"{second.admin}/models/a/load", timeout=60)
            assert answer.status_code == 200
            now = _regions(prefix)
            assert len(now) == 1 and not now & regions  # its own, none stale
        finally:
            os.kill(second.pid, signal.SIGTERM)  # a clean stop
            assert _wait(lambda: not _running(second.pid), 60)
            assert _wait(lambda: not _regions(prefix), 10)
            second.close()
    finally:
        first.close()
