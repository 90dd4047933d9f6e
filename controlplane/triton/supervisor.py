"""Triton after start-up: noticed when it dies or hangs, restarted with back-off, and told.

The embedded server's exit is seen at once (a thread waits on it, see
``TritonProcess.exit_future``); a server that hangs (SIGSTOP, a deadlock) is seen by a liveness
probe with a short timeout, and one whose log shows Triton's fatal-signal handler ran is a
crash even while it neither exits nor stops answering (that handler can deadlock after heap
corruption). Each makes it not serving: listeners (the model manager) mark
every model cold, readiness turns false, requests fail fast. A dead embedded server is reaped
with its stubs and shared memory and restarted with exponential back-off, at most
``max_restarts`` per ``restart_window_s``; then it stays down and says so until the operator
restarts it. A hung one is killed only after ``hang_restart_after_s``, much later than it turns
not-ready: a stopped server that resumes comes back with every model still loaded.
Health endpoints read :meth:`TritonSupervisor.snapshot`, never Triton itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from controlplane.background import Background
from controlplane.config import SupervisionSettings
from controlplane.errors import Conflict, ControlPlaneError, TritonStartError
from controlplane.loops import Loops
from controlplane.triton.watched import (
    Listener,
    Probe,
    Supervised,
    TritonState,
    describe_exit,
)

log = logging.getLogger(__name__)

LOOP = "triton-supervisor"

__all__ = ["LOOP", "Listener", "Probe", "Supervised", "TritonState", "TritonSupervisor",
           "describe_exit"]


class TritonSupervisor:
    def __init__(self, *, options: SupervisionSettings, probe: Probe,
                 process: Supervised | None = None, loops: Loops | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.options = options
        self.probe = probe
        self.process = process
        self.loops = loops or Loops()
        self.clock = clock
        self.sleep = sleep
        self.listeners: list[Listener] = []
        #: awaited after a restart, before listeners hear of it (fresh gRPC channels: one
        #: that failed to connect waits out its reconnect back-off, seconds after a restart)
        self.on_restart: list[Callable[[], Awaitable[object]]] = []
        #: awaited each time Triton is about to be live again (restarted, or answering after
        #: a hang), before anything routes to it: server-wide state it must have first
        #: (shared-memory registrations); each bounded by the probe timeout plus 5 s
        self.before_live: list[Callable[[], Awaitable[object]]] = []
        self.state = TritonState.LIVE
        self.reason = "started"
        self.since = clock()
        self.misses = 0
        self.last_ok: float | None = None
        self.last_exit: str | None = None
        self.next_restart_at: float | None = None
        #: monotonic times of the restarts within the window and the models their crash was
        #: traced to (the back-off counts them)
        self.restarts: deque[tuple[float, frozenset[str]]] = deque()
        #: told (synchronously) of each crash the moment its exit is seen: who was in it
        self.on_crash: list[Callable[[str], None]] = []
        #: asked, before a restart, which models the crash it follows is traced to
        self.cause: Callable[[], frozenset[str]] = frozenset
        #: whether a crash so traced is explained (a model now quarantined): such restarts
        #: do not count toward ``max_restarts`` -- the budget counts per cause
        self.excused: Callable[[frozenset[str]], bool] = lambda cause: False
        #: counters for metrics: times it stopped serving, and restarts that brought it back
        self.outages_total = 0
        self.restarts_total = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._generation = 0
        #: generations whose exit is ours (a stop, a kill for hanging): not a crash
        self._expected: set[int] = set()
        #: the probe loop and the process watcher
        self._background = Background()
        self._recovery: asyncio.Task[None] | None = None
        self._restore: asyncio.Task[object] | None = None
        self._closing = False

    # -- reading (cheap: health endpoints and the gateway call these per request) ----------
    @property
    def serving(self) -> bool:
        return self.state is TritonState.LIVE

    def down_reason(self) -> str | None:
        """None while Triton serves; otherwise why not, for clients and operators."""
        if self.state is TritonState.LIVE:
            return None
        text = f"Triton is {self.state.value}: {self.reason}"
        if self.state is TritonState.RESTARTING and self.next_restart_at is not None:
            text += f" (next start in {max(0.0, self.next_restart_at - self.clock()):.1f}s)"
        return text

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        restore = self._restore
        return {
            "state": self.state.value, "reason": self.reason,
            "for_s": round(now - self.since, 1), "embedded": self.process is not None,
            "pid": self.process.pid if self.process is not None else None,
            "last_exit": self.last_exit,
            "restarts_in_window": len(self._recent_restarts()),
            "max_restarts": self.options.max_restarts,
            "next_restart_in_s": None if self.next_restart_at is None or
            self.state is not TritonState.RESTARTING else round(self.next_restart_at - now, 1),
            "probe_misses": self.misses,
            "last_probe_ok_s_ago": None if self.last_ok is None else round(now - self.last_ok, 1),
            "restoring": restore is not None and not restore.done(),
            "outages_total": self.outages_total, "restarts_total": self.restarts_total,
        }

    # -- running ----------------------------------------------------------------------------
    def start(self) -> None:
        """Watch a Triton that is live now (started, or attached to)."""
        self._set(TritonState.LIVE, "started")
        self.last_ok = self.clock()
        self._watch_exit()
        self._background.spawn(self._probe_loop())

    def poke(self) -> None:
        """Probe now (the gateway saw Triton fail a request)."""
        self._wake.set()

    async def close(self) -> None:
        """Stop watching (before the process is stopped: that exit is no crash)."""
        self._closing = True
        self._expected.add(self._generation)
        self._set(TritonState.STOPPED, "control plane stopping")
        tasks = [t for t in (*self._background, self._recovery, self._restore)
                 if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a task that swallowed its cancellation must not hang the stop
            await asyncio.wait(tasks, timeout=self.options.probe_timeout_s + 5)

    async def restart(self, why: str = "requested by the operator") -> None:
        """Stop the embedded Triton (cleanly if it can), start it again and restore its models
        in the background; returns once it is live. Forgets earlier restarts (the back-off
        and the give-up count start over). Raises Conflict for an external Triton and
        TritonStartError when it does not come up (it stays failed then)."""
        if self.process is None:
            raise Conflict("Triton is external (triton.url): restart it where it runs")
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        async with self._lock:
            self._expected.add(self._generation)
            responsive = self.state is TritonState.LIVE
            await self._down(TritonState.RESTARTING, f"restart {why}")
            process = self.process
            # a hung server ignores SIGINT (a stopped one does not even see it): kill it
            end = process.stop if responsive else process.kill

            def finish() -> None:
                end()
                process.cleanup()

            await asyncio.to_thread(finish)
            self.restarts.clear()
            try:
                await self._launch(attempts=3)
            except TritonStartError as exc:
                self._set(TritonState.FAILED, f"restart {why} failed: {exc}")
                raise

    async def wait_restored(self) -> object:
        """The result of the restore in progress (None if none)."""
        restore = self._restore
        return None if restore is None else await asyncio.shield(restore)

    # -- internals --------------------------------------------------------------------------
    def _set(self, state: TritonState, reason: str) -> None:
        if state is not self.state:
            self.since = self.clock()
        self.state, self.reason = state, reason


    def _recent_restarts(self) -> list[float]:
        """Restarts within the window whose crash no quarantined model explains."""
        horizon = self.clock() - self.options.restart_window_s
        while self.restarts and self.restarts[0][0] < horizon:
            self.restarts.popleft()
        return [at for at, cause in self.restarts if not (cause and self.excused(cause))]

    def _watch_exit(self) -> None:
        if self.process is None:
            return
        self._generation += 1
        generation, pid = self._generation, self.process.pid
        future = self.process.exit_future()

        async def watch() -> None:
            code = await future
            if self._closing or generation in self._expected:
                return
            reason = f"tritonserver (pid {pid}) {describe_exit(code)}"
            self.last_exit = reason
            log.error("%s: every model is unavailable until it is back", reason)
            for hook in self.on_crash:
                hook(reason)
            self._begin_recovery(reason)

        self._background.spawn(watch())

    def _begin_recovery(self, reason: str) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(reason), name="triton-recovery")

    async def _recover(self, reason: str) -> None:
        """A dead (or killed for hanging) embedded server: clean up, restart with back-off."""
        assert self.process is not None
        process = self.process
        async with self._lock:
            await self._down(TritonState.DOWN, reason)
            await asyncio.to_thread(process.cleanup)
            if not self.options.restart:
                self._set(TritonState.FAILED, f"{reason}; automatic restart is off "
                                              "(triton.supervision.restart)")
                return
            crash_cause = True  # the first restart follows the crash; later ones failed starts
            while not self._closing:
                recent = self._recent_restarts()
                if len(recent) >= self.options.max_restarts:
                    self._set(TritonState.FAILED, (
                        f"{reason}; gave up after {len(recent)} restarts within "
                        f"{self.options.restart_window_s:g}s: restart it with "
                        "`warmctl triton restart` (POST /triton/restart)"))
                    log.error("Triton stays down: %s", self.reason)
                    self.loops.failed(LOOP, self.reason)
                    return
                delay = min(self.options.restart_delay_s * 2 ** len(recent),
                            self.options.restart_delay_max_s)
                self.next_restart_at = self.clock() + delay
                self._set(TritonState.RESTARTING, f"{reason}; restart {len(recent) + 1} of at "
                                                  f"most {self.options.max_restarts}")
                log.warning("restarting tritonserver in %.1fs (%s)", delay, self.reason)
                await self.sleep(delay)
                # after the delay: the requests that died with it have reported by now
                self.restarts.append((self.clock(),
                                      self.cause() if crash_cause else frozenset()))
                crash_cause = False
                try:
                    await self._launch(attempts=1)
                    return
                except TritonStartError as exc:
                    reason = f"restart failed: {str(exc)[:300]}"
                    log.error("tritonserver %s", reason)
                    self.loops.failed(LOOP, reason)

    async def _launch(self, attempts: int) -> None:
        assert self.process is not None
        await self.process.launch(attempts=attempts)
        self.restarts_total += 1
        self._watch_exit()
        for hook in self.on_restart:
            await hook()
        log.warning("tritonserver is back (pid %s); restoring its models", self.process.pid)
        await self._up("restarted")

    async def _down(self, state: TritonState, reason: str) -> None:
        if self._closing:
            return
        if self.state is TritonState.LIVE:
            self.outages_total += 1
        self._set(state, reason)
        if self._restore is not None:
            self._restore.cancel()
        for listener in self.listeners:
            try:
                await listener.triton_down(reason)
            except Exception:
                log.exception("listener of Triton going down failed")

    async def _up(self, how: str) -> None:
        if self._closing:
            return
        for hook in self.before_live:
            try:
                await asyncio.wait_for(hook(), self.options.probe_timeout_s + 5)
            except Exception as exc:  # Triton serves without it rather than not at all
                log.warning("before Triton turned live again: %s", exc)
        self._set(TritonState.LIVE, how)
        self.misses, self.last_ok, self.next_restart_at = 0, self.clock(), None

        async def restore() -> object:
            results = []
            for listener in self.listeners:
                try:
                    results.append(await listener.triton_up())
                except ControlPlaneError as exc:
                    log.warning("restore after Triton came back: %s", exc)
                    self.loops.failed(LOOP, f"restore: {exc}")
            return results

        self._restore = asyncio.create_task(restore(), name="triton-restore")

    async def _probe_loop(self) -> None:
        # checks the flag as well: asyncio.wait_for (3.11) can swallow a cancellation that
        # arrives as the probe completes, and this loop must still end at close()
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.probe_interval_s)
            self._wake.clear()
            if self._closing or self._lock.locked() or self.state not in (
                    TritonState.LIVE, TritonState.UNRESPONSIVE, TritonState.DOWN):
                continue  # a restart is under way, or given up
            if self.state is TritonState.DOWN and self.process is not None:
                continue  # an embedded server that died is the recovery's business
            await self._probe_once()

    async def _probe_once(self) -> None:
        if self.process is not None and (fatal := self.process.fatal_signal()) is not None:
            # its signal handler can deadlock after heap corruption: a process that neither
            # exits nor stops answering liveness, with every load hung. A crash all the same.
            reason = f"tritonserver (pid {self.process.pid}) crashed: its log says '{fatal}'"
            log.error("%s; killing and restarting it", reason)
            await self._kill(reason, crash=True)
            return
        why = "not live"
        try:
            live = await asyncio.wait_for(self.probe(), self.options.probe_timeout_s + 0.5)
        except TimeoutError:
            live, why = False, f"no answer within {self.options.probe_timeout_s:g}s"
        except ControlPlaneError as exc:
            live, why = False, str(exc)[:300]
        if live:
            self.misses, self.last_ok = 0, self.clock()
            self.loops.ok(LOOP)
            if self.state is not TritonState.LIVE:
                log.warning("Triton answers again after %.1fs %s; restoring its models",
                            self.clock() - self.since, self.state.value)
                await self._up("answering again")
            return
        self.misses += 1
        self.loops.failed(LOOP, f"liveness probe: {why}")
        if self.state is TritonState.LIVE and self.misses >= self.options.probe_misses:
            # an embedded process that exists is unresponsive whatever the probe says (its
            # exit is the watcher's to see); an external one refusing connections is down
            down = self.process is None and "unreachable" in why
            state = TritonState.DOWN if down else TritonState.UNRESPONSIVE
            reason = f"liveness probe failed {self.misses} times in a row ({why})"
            log.error("Triton %s: %s", state.value, reason)
            await self._down(state, reason)
        hang = self.options.hang_restart_after_s
        if (self.state is TritonState.UNRESPONSIVE and self.process is not None and hang > 0
                and self.clock() - self.since >= hang):
            reason = f"tritonserver (pid {self.process.pid}) hung for {hang:g}s: killed"
            log.error("%s; restarting it", reason)
            await self._kill(reason, crash=False)

    async def _kill(self, reason: str, *, crash: bool) -> None:
        """Kill the embedded server (its exit is ours, not seen as a crash) and restart it;
        ``crash``: tell the crash hooks first (the requests in it were its victims)."""
        assert self.process is not None
        self._expected.add(self._generation)
        self.last_exit = reason
        if crash:
            for hook in self.on_crash:
                hook(reason)
        await asyncio.to_thread(self.process.kill)
        self._begin_recovery(reason)
