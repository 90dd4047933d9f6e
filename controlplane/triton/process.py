"""The embedded tritonserver process: start, wait until live, stop without leaving orphans."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from controlplane.errors import TritonStartError
from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.leftovers import reap_shm, reap_stubs, wait_gone
from controlplane.triton.server_log import error_lines, fatal_signal, log_tail, open_server_log
from controlplane.triton.watchdog import start_watchdog, stop_watchdog

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. The signal fires when the *thread* that forked
    # exits, which is why start() must run on a thread that outlives the server (the main one).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class TritonProcess:
    distribution: TritonDistribution
    model_repository: Path
    backend_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    startup_timeout_s: float = 60.0
    stop_timeout_s: float = 15.0
    disable_auto_complete_config: bool = True
    extra_args: list[str] = field(default_factory=list)
    #: added to the server's environment (which the Python backend stubs inherit)
    env: dict[str, str] = field(default_factory=dict)
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    #: exit code of a start-up that ended on its own (not stopped by us for taking too long)
    _startup_exit: int | None = field(default=None, init=False, repr=False)
    #: ends the server's stubs if we die (``watchdog.py``); None while no server runs
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    #: where the running server logs: ``log_path``, or a temporary file when the data
    #: directory takes no writes (a Triton restart must not depend on the data disk)
    _log_now: Path | None = field(default=None, init=False, repr=False)
    #: where in that log the next read for a fatal signal starts (``fatal_signal``)
    _signal_scan: int = field(default=0, init=False, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    @property
    def shm_prefix(self) -> str | None:
        """The Python backend's region prefix if ``extra_args`` set one (None: its default
        names, see ``leftovers.is_region``)."""
        for arg in self.extra_args:
            if "shm-region-prefix-name=" in arg:
                return arg.rsplit("shm-region-prefix-name=", 1)[1]
        return None

    def exit_future(self) -> asyncio.Future[int]:
        """A future that resolves with the exit code when the running server exits.

        A daemon thread blocks in ``waitpid`` (Popen.wait), so the exit is seen at once and
        the process is reaped (no zombie); a stopped (SIGSTOP) server does not resolve it.
        Resolves at once when no server is running (``-1`` if none was ever started).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        popen = self._popen
        if popen is None:
            future.set_result(-1)
            return future

        def wait() -> None:
            code = popen.wait()
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
                loop.call_soon_threadsafe(
                    lambda: None if future.done() else future.set_result(code))

        threading.Thread(target=wait, name=f"tritonserver-{popen.pid}-exit",
                         daemon=True).start()
        return future

    def kill(self) -> int | None:
        """SIGKILL the server and everything of its process group (stubs); reap; free the
        shared memory it leaves. For a hung or dead server; ``stop`` is the clean way."""
        popen = self._popen
        if popen is None:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            popen.kill()
        popen.wait()
        self.cleanup()
        return popen.returncode

    def cleanup(self) -> None:
        """After the server is gone: end its stubs (they outlive a killed server, holding their
        memory) and free the shared memory it leaves in /dev/shm."""
        popen = self._popen
        if popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
        self._end_watchdog()
        stubs = reap_stubs(self.backend_dir)
        if stubs:
            log.warning("killed %d Python backend stub(s) of a dead tritonserver: %s",
                        len(stubs), stubs)
        wait_gone(stubs, timeout_s=2.0)  # a dying stub still maps its region
        removed = reap_shm(self.shm_prefix)
        if removed:
            log.warning("removed %d shared-memory region(s) left by a dead tritonserver",
                        len(removed))

    def command(self) -> list[str]:
        return [
            str(self.distribution.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir}",
            "--model-control-mode=explicit",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout_s) - 1)}",
            *(["--disable-auto-complete-config"] if self.disable_auto_complete_config else []),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The server finds its own libraries; the Python backend stub does not, and a stub that
        # cannot load them leaves the load call hanging instead of failing.
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.distribution.libs), env.get("LD_LIBRARY_PATH", "")) if p
        )
        # The stub embeds Python and takes its environment from the python3 on PATH: put ours
        # first so models import this environment's torch and numpy.
        env["PATH"] = os.pathsep.join((str(Path(sys.exec_prefix) / "bin"), env.get("PATH", "")))
        env.update(self.env)
        return env

    async def launch(self, attempts: int = 3) -> None:
        """Start and wait until live; retry when the failure can be transient.

        A port found free can be taken by someone else before Triton binds it; Triton then
        exits at start-up, and we retry on fresh ports. Ports set explicitly are not retried:
        that conflict is real. A start-up that dies by a signal (seen here under heavy CPU
        load: gRPC's ``epoll_wait error: Bad file descriptor`` abort) is retried as is; an
        ordinary non-zero exit (a bad flag, a missing repository) is not.
        """
        auto = [a for a in ("grpc_port", "http_port", "metrics_port") if getattr(self, a) == 0]
        for attempt in range(1, attempts + 1):
            self.start()
            try:
                await self.wait_live()
                return
            except TritonStartError:
                taken = bool(auto) and "already in use" in self.log_tail(10)
                crashed = (self._startup_exit or 0) < 0
                if not (taken or crashed) or attempt == attempts:
                    raise
                log.warning("tritonserver %s at start-up (attempt %d), retrying:\n%s",
                            "crashed" if crashed else "found its port taken", attempt,
                            self.log_tail(5))
                for name in auto:
                    setattr(self, name, 0)

    def start(self) -> None:
        """Spawn tritonserver. Call from the main thread (see ``_die_with_parent``)."""
        if self._popen is not None and self._popen.poll() is None:
            raise TritonStartError("tritonserver is already running")
        reaped = reap_stubs(self.backend_dir)
        if reaped:
            log.warning("killed %d Python backend stub(s) left by a previous run: %s",
                        len(reaped), reaped)
        removed = reap_shm(self.shm_prefix)
        if removed:
            log.warning("removed %d shared-memory region(s) of the Python backend left by a "
                        "previous run in /dev/shm", len(removed))
        for attr in ("grpc_port", "http_port", "metrics_port"):
            if getattr(self, attr) == 0:
                setattr(self, attr, free_port(self.host))
        self._end_watchdog()
        self._log_now, log_file = open_server_log(self.log_path)
        self._signal_scan = 0  # a new log: read for fatal signals from its start
        with log_file:
            self._popen = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                preexec_fn=_die_with_parent,
                # Own process group: a Ctrl-C in the terminal reaches us, and we stop Triton
                # in order instead of both racing.
                start_new_session=True,
            )
        self._watchdog = start_watchdog(self._popen.pid, [
            self.command()[0], str(self.backend_dir / "python" / "triton_python_backend_stub")])
        log.info("tritonserver pid %s: grpc %s, log %s", self._popen.pid, self.grpc_url,
                 self._log_now)

    def _end_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            stop_watchdog(watchdog)

    async def wait_live(self) -> None:
        self._startup_exit = None
        deadline = time.monotonic() + self.startup_timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                code = self.returncode
                if code is not None:
                    self._startup_exit = code
                    self._end_watchdog()
                    raise TritonStartError(
                        f"tritonserver exited with code {code} during start-up; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.get(f"{self.http_url}/v2/health/live")
                    if response.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise TritonStartError(
                        f"tritonserver not live after {self.startup_timeout_s:.0f}s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def stop(self) -> int | None:
        """SIGINT, wait up to ``stop_timeout_s``, then SIGKILL. Returns the exit code."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver ignored SIGINT for %.0fs; killing it",
                            self.stop_timeout_s)
                popen.kill()
                popen.wait()
        # Python backend stubs do not die with a killed server: end whatever of its process
        # group is left (the group is Triton's own, see start_new_session).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        self._end_watchdog()
        return popen.returncode

    def error_lines(self, needle: str, *, max_bytes: int = 256 * 1024) -> list[str]:
        """Error-level log messages that mention ``needle``, oldest first (from the log's end)."""
        return error_lines(self._log_now or self.log_path, needle, max_bytes=max_bytes)

    def fatal_signal(self) -> str | None:
        """The line Triton's fatal-signal handler wrote since the last call ("Signal (6)
        received."), while the process still runs (an exit is its exit watcher's to see);
        None otherwise. Reads only what the log gained since the last call."""
        if self._popen is None or self._popen.poll() is not None or self._log_now is None:
            return None
        found, self._signal_scan = fatal_signal(self._log_now, self._signal_scan)
        return found

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self._log_now or self.log_path, lines)
