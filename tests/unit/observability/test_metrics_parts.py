"""Pieces of /metrics that need no control plane: Triton restarts, scheduler actions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from controlplane.observability.metrics import Metrics, TritonWatch
from controlplane.scheduler.driver import ActionRecord


async def test_restarts_are_returns_with_a_new_process() -> None:
    process = SimpleNamespace(pid=100)
    supervisor: Any = SimpleNamespace(process=process)
    watch = TritonWatch(supervisor)
    await watch.triton_down("probe missed")
    await watch.triton_up()  # a hang that resolved: same process
    assert (watch.outages, watch.restarts) == (1, 0)
    await watch.triton_down("exited with code 1")
    process.pid = 101
    await watch.triton_up()
    assert (watch.outages, watch.restarts) == (2, 1)


def test_scheduler_actions_counted_once_across_the_trimmed_list() -> None:
    actions: list[ActionRecord] = []
    metrics: Any = SimpleNamespace(cp=SimpleNamespace(
        scheduler=SimpleNamespace(state=SimpleNamespace(actions=actions))),
        actions={}, _last_action=None)

    def record(kind: str, outcome: str) -> None:
        actions.append(ActionRecord(0.0, kind, "m", "why", outcome))
        del actions[:-3]  # the scheduler keeps the last few

    record("load", "ok")
    record("unload", "ok")
    Metrics._count_actions(metrics)
    record("load", "failed")
    record("load", "ok")
    Metrics._count_actions(metrics)
    Metrics._count_actions(metrics)
    assert metrics.actions == {("load", "ok"): 2, ("unload", "ok"): 1, ("load", "failed"): 1}
