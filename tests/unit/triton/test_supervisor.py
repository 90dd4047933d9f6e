"""The supervisor's restarts, back-off, give-up and hang handling, against a fake process."""

from __future__ import annotations

import asyncio
import signal

import pytest

from controlplane.config import SupervisionSettings
from controlplane.errors import Conflict, TritonStartError, TritonUnavailable
from controlplane.loops import Loops
from controlplane.triton.supervisor import TritonState, TritonSupervisor, describe_exit


class FakeProcess:
    """Stands in for TritonProcess: exits on demand; ``fail_launches`` start-ups fail."""

    def __init__(self, fail_launches: int = 0) -> None:
        self.fail_launches = fail_launches
        self.launches = 0
        self.kills = 0
        self.stops = 0
        self.cleanups = 0
        self.pid: int | None = 100
        self._exit: asyncio.Future[int] | None = None
        #: what its log's fatal-signal line says, once (None: nothing new)
        self.fatal: str | None = None

    def exit_future(self) -> asyncio.Future[int]:
        self._exit = asyncio.get_running_loop().create_future()
        return self._exit

    def die(self, code: int = -signal.SIGKILL) -> None:
        assert self._exit is not None
        self._exit.set_result(code)

    async def launch(self, attempts: int = 3) -> None:
        self.launches += 1
        if self.fail_launches > 0:
            self.fail_launches -= 1
            raise TritonStartError("tritonserver exited with code 1 during start-up")
        self.pid = 100 + self.launches

    def stop(self) -> int | None:
        self.stops += 1
        return 0

    def kill(self) -> int | None:
        self.kills += 1
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(-signal.SIGKILL)
        return -9

    def cleanup(self) -> None:
        self.cleanups += 1

    def fatal_signal(self) -> str | None:
        found, self.fatal = self.fatal, None
        return found


class Recorder:
    """A listener that records what it is told."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def triton_down(self, reason: str) -> None:
        self.events.append(f"down: {reason}")

    async def triton_up(self) -> object:
        self.events.append("up")
        return {}


class Probe:
    def __init__(self) -> None:
        self.answer: bool | Exception = True
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def make(process: FakeProcess | None, probe: Probe | None = None,
         **options: float) -> tuple[TritonSupervisor, Recorder, list[float]]:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    opts = SupervisionSettings(**{"probe_interval_s": 0.01, "probe_timeout_s": 0.05,
                                  "restart_delay_s": 1.0, "restart_delay_max_s": 8.0,
                                  **options})
    supervisor = TritonSupervisor(options=opts, probe=probe or Probe(), process=process,
                                  loops=Loops(), sleep=sleep)
    recorder = Recorder()
    supervisor.listeners.append(recorder)
    return supervisor, recorder, delays


async def until(check: object, timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_a_crash_is_reaped_and_restarted_after_failed_starts_with_doubling_delays(
) -> None:
    process = FakeProcess()
    supervisor, recorder, delays = make(process)
    supervisor.start()
    process.fail_launches = 2
    process.die()
    await until(lambda: supervisor.state is TritonState.LIVE and "up" in recorder.events)
    assert process.launches == 3 and process.cleanups == 1
    assert delays == [1.0, 2.0, 4.0]
    assert recorder.events[0] == "down: tritonserver (pid 100) was killed by signal 9 (SIGKILL)"
    assert supervisor.snapshot()["restarts_in_window"] == 3
    assert supervisor.last_exit == "tritonserver (pid 100) was killed by signal 9 (SIGKILL)"
    # the new process is watched too
    process.die(code=-signal.SIGSEGV)
    await until(lambda: process.launches == 4 and supervisor.serving)
    assert delays[-1] == 8.0  # 1 * 2**3, at the cap
    await supervisor.close()


async def test_gives_up_after_max_restarts_and_the_operator_can_start_over() -> None:
    process = FakeProcess(fail_launches=100)
    supervisor, recorder, _ = make(process, max_restarts=3)
    supervisor.start()
    process.die(code=1)
    await until(lambda: supervisor.state is TritonState.FAILED)
    assert process.launches == 3
    assert "gave up after 3 restarts" in supervisor.reason
    assert "warmctl triton restart" in (supervisor.down_reason() or "")
    assert supervisor.loops.status("triton-supervisor").failing
    await asyncio.sleep(0.05)
    assert process.launches == 3  # it stays down: no more attempts
    process.fail_launches = 0
    await supervisor.restart()
    assert supervisor.serving and process.launches == 4
    assert supervisor.snapshot()["restarts_in_window"] == 0  # the operator's restart resets
    assert recorder.events[-1] == "up" or await supervisor.wait_restored() is not None
    await supervisor.close()


async def test_restart_is_off_leaves_it_failed() -> None:
    process = FakeProcess()
    supervisor, _, _ = make(process, restart=False)  # type: ignore[arg-type]
    supervisor.start()
    process.die(code=-signal.SIGABRT)
    await until(lambda: supervisor.state is TritonState.FAILED)
    assert process.launches == 0 and "automatic restart is off" in supervisor.reason
    await supervisor.close()


async def test_a_hung_server_turns_unresponsive_then_recovers_without_a_restart() -> None:
    process, probe = FakeProcess(), Probe()
    supervisor, recorder, _ = make(process, probe, probe_misses=3, hang_restart_after_s=60)
    supervisor.start()
    probe.answer = TritonUnavailable("liveness check timed out")
    await until(lambda: supervisor.state is TritonState.UNRESPONSIVE)
    assert probe.calls >= 3
    assert recorder.events == ["down: liveness probe failed 3 times in a row "
                               "(liveness check timed out)"]
    probe.answer = True
    await until(lambda: supervisor.serving)
    await until(lambda: recorder.events[-1] == "up")
    assert process.kills == 0 and process.launches == 0
    await supervisor.close()


async def test_a_server_hung_past_the_threshold_is_killed_and_restarted() -> None:
    process, probe = FakeProcess(), Probe()
    supervisor, recorder, _ = make(process, probe, probe_misses=1,
                                   hang_restart_after_s=0.05)
    supervisor.start()
    probe.answer = False
    await until(lambda: process.kills == 1)
    probe.answer = True
    await until(lambda: supervisor.serving and process.launches == 1)
    assert any("hung for 0.05s: killed" in e for e in recorder.events)
    await supervisor.close()


async def test_a_fatal_signal_in_its_log_is_a_crash_even_while_it_still_answers() -> None:
    """Triton's signal handler can deadlock after heap corruption: liveness still answers,
    the process neither exits nor serves. Its log's line makes it a crash: told, killed,
    restarted at once (not after the hang threshold)."""
    process = FakeProcess()
    probe = Probe()  # answers live throughout
    supervisor, recorder, _ = make(process, probe, hang_restart_after_s=3600)
    crashes: list[str] = []
    supervisor.on_crash.append(crashes.append)
    supervisor.start()
    await until(lambda: probe.calls >= 2)
    assert supervisor.state is TritonState.LIVE and process.kills == 0
    process.fatal = "Signal (6) received."
    await until(lambda: process.launches == 1 and supervisor.state is TritonState.LIVE)
    assert process.kills == 1 and process.cleanups == 1
    said = "tritonserver (pid 100) crashed: its log says 'Signal (6) received.'"
    assert crashes == [said] and recorder.events[0] == f"down: {said}"
    assert supervisor.last_exit == said and supervisor.outages_total == 1


async def test_an_external_triton_is_probed_and_cannot_be_restarted() -> None:
    probe = Probe()
    supervisor, recorder, _ = make(None, probe, probe_misses=2)
    supervisor.start()
    probe.answer = TritonUnavailable("Triton at x:1 is unreachable: connection refused")
    await until(lambda: supervisor.state is TritonState.DOWN)
    probe.answer = True
    await until(lambda: supervisor.serving and recorder.events[-1] == "up")
    with pytest.raises(Conflict, match="external"):
        await supervisor.restart()
    await supervisor.close()


async def test_closing_is_not_a_crash() -> None:
    process = FakeProcess()
    supervisor, recorder, _ = make(process)
    supervisor.start()
    await supervisor.close()
    process.die(code=0)
    await asyncio.sleep(0.02)
    assert process.launches == 0 and recorder.events == []
    assert supervisor.state is TritonState.STOPPED


def test_exit_codes_read_as_words() -> None:
    assert describe_exit(-11) == "was killed by signal 11 (SIGSEGV)"
    assert describe_exit(2) == "exited with code 2"


async def test_the_restart_budget_counts_per_cause() -> None:
    """Crashes a quarantined model explains do not bring the instance nearer to giving up;
    the others do. A crash's cause is asked for after the restart delay, once."""
    process = FakeProcess()
    supervisor, _, _ = make(process, max_restarts=2)
    crashes: list[str] = []
    causes = iter([frozenset({"crasher"}), frozenset({"crasher"}), frozenset({"crasher"}),
                   frozenset()])
    quarantined: set[str] = set()
    supervisor.on_crash.append(crashes.append)
    supervisor.cause = lambda: next(causes)
    supervisor.excused = lambda cause: bool(cause & quarantined)
    supervisor.start()
    for n in (1, 2):
        process.die(code=-signal.SIGSEGV)
        await until(lambda n=n: process.launches == n and supervisor.serving)
    assert len(crashes) == 2 and "SIGSEGV" in crashes[0]
    assert supervisor.snapshot()["restarts_in_window"] == 2
    quarantined.add("crasher")  # the tracker traced both crashes to it
    assert supervisor.snapshot()["restarts_in_window"] == 0
    process.die(code=-signal.SIGSEGV)  # a third crash of the same cause: still restarted
    await until(lambda: process.launches == 3 and supervisor.serving)
    process.die(code=-signal.SIGSEGV)  # one of no known cause: counts
    await until(lambda: process.launches == 4 and supervisor.serving)
    assert supervisor.snapshot()["restarts_in_window"] == 1
    await supervisor.close()


async def test_before_live_hooks_run_before_it_serves_again() -> None:
    process = FakeProcess()
    supervisor, _, _ = make(process)
    seen: list[bool] = []

    async def hook() -> None:
        seen.append(supervisor.serving)

    supervisor.before_live.append(hook)
    supervisor.start()
    process.die()
    await until(lambda: process.launches == 1 and supervisor.serving)
    assert seen == [False]
    await supervisor.close()
