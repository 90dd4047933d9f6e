"""Ends what an embedded tritonserver leaves when warmctl dies: its Python backend stubs and
their shared-memory regions. Run as a script of its own (standard library only)::

    python -I -S watchdog.py <process group> <executable> [<executable> ...]

Why it is needed: tritonserver dies with warmctl (``PR_SET_PDEATHSIG``), but its stubs do
not. A stub learns that its server is gone from a thread that checks ``kill(server_pid, 0)``
every 300 ms (python_backend ``src/pb_stub.cc``), and that call succeeds on a zombie. Where
the orphaned server is re-parented to a process that does not reap it (a container whose
PID 1 is not an init, a supervisor that is a subreaper, a test harness), the server stays a
zombie and its stubs live on, holding their memory (about 300 MiB each with torch) and
their /dev/shm regions, until warmctl's next start reaps them.

warmctl starts this watchdog (own session, so a Ctrl-C or a group kill of warmctl's group
does not reach it) with a pipe as its stdin whose only writer is warmctl. End of file on it
means warmctl closed it (the server is stopped: nothing is left) or died (the kernel closed
it): either way every process of the server's group that runs one of our executables is
killed, and the regions they had mapped are removed once no live process maps them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SHM = "/dev/shm/"


def _members(pgid: int, executables: set[str]) -> dict[int, set[str]]:
    """Running processes of group ``pgid`` whose argv[0] is one of ``executables``, and the
    /dev/shm files each maps."""
    found: dict[int, set[str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z" or int(fields[2]) != pgid:
                continue
            argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            if argv0 not in executables:
                continue
            found[int(proc.name)] = _mapped(proc)
    return found


def _mapped(proc: Path) -> set[str]:
    names = set()
    with contextlib.suppress(OSError):
        for line in (proc / "maps").read_text(errors="replace").splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith(SHM):
                names.add(parts[5][len(SHM):].removesuffix(" (deleted)"))
    return names


def _in_use(names: set[str]) -> set[str]:
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            used |= _mapped(proc) & names
    return used


def reap(pgid: int, executables: set[str], timeout_s: float = 5.0) -> tuple[list[int], list[str]]:
    """Kill the group's processes of ours, then remove their regions nobody maps any more.
    Returns (pids killed, regions removed)."""
    members = _members(pgid, executables)
    regions = set().union(*members.values()) if members else set()
    for pid in members:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while _members(pgid, executables) and time.monotonic() < deadline:
        time.sleep(0.05)
    removed = []
    for name in sorted(regions - _in_use(regions)):
        with contextlib.suppress(OSError):
            os.unlink(SHM + name)
            removed.append(name)
    return sorted(members), removed


def start_watchdog(pgid: int, executables: list[str]) -> subprocess.Popen[bytes]:
    """Start a watchdog for the server of process group ``pgid`` (from warmctl). Its stdin
    is the pipe only this process writes to: :func:`stop_watchdog` (or our death) ends it."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", __file__, str(pgid), *executables],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)


def stop_watchdog(watchdog: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """The server is gone: close the pipe, so the watchdog ends what is left, and reap it."""
    if watchdog.stdin is not None:
        with contextlib.suppress(OSError):
            watchdog.stdin.close()
    try:
        watchdog.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: watchdog.py <process group> <executable> [...]", file=sys.stderr)
        return 2
    pgid, executables = int(argv[1]), set(argv[2:])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of its pipe ends it
    while sys.stdin.buffer.read(4096):
        pass  # nothing is ever written; a read returns b"" once the writer is gone
    killed, removed = reap(pgid, executables)
    if killed or removed:
        print(f"warmctl watchdog: killed {killed} of process group {pgid}, removed "
              f"{len(removed)} shared-memory region(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
