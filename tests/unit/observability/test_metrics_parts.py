"""Pieces of /metrics that need no control plane: Triton restarts, scheduler actions, the
families of a fleet."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from controlplane.lifecycle.states import ModelState
from controlplane.observability.families import InstanceFigures, Snapshot, families
from controlplane.observability.metrics import Metrics, TritonWatch
from controlplane.observability.status import ModelOverview, ReplicaOverview, StatusView
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


def test_per_instance_families_carry_every_instance() -> None:
    """Two instances: Triton, requests in flight, draining and each replica's state are
    labelled by their own instance; fleet-wide decisions by the control plane's name."""
    status = StatusView(at=0.0, minutes=1, first_minute=0, instances=[], next_preloads=[],
                        rollouts=[], models=[ModelOverview(
                            name="m", instance="a", state=ModelState.READY, reason=None,
                            level="cpu", pinned=False, held=False, replicas=1,
                            memory_mb=10.0, last_load=None, requests=0, cold_starts=0,
                            per_minute=[0], decision="keep", why="hot", preload_at=None,
                            instances=[ReplicaOverview(instance="a", state=ModelState.READY,
                                                       level="cpu", routable=True),
                                       ReplicaOverview(instance="b", state=ModelState.COLD,
                                                       level="cold", routable=False)])])

    def figures(name: str, up: bool, outstanding: int, draining: bool) -> InstanceFigures:
        return InstanceFigures(name=name, events={("load", "api", "ok"): 1}, durations={},
                               phases={}, triton_up=up, restarts=0, outages=0,
                               triton_info=None, outstanding=outstanding, draining=draining)

    snap = Snapshot(requests={}, cold_starts={}, waits={}, recorder=None, actions={},
                    gateway=None, instances=[figures("a", True, 3, False),
                                             figures("b", False, 0, True)],
                    fleet_actions={("b", "drain", "unloaded"): 1}, status=status)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families(snap, "cp") for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("warmctl_triton_up", instance="a") == 1
    assert value("warmctl_triton_up", instance="b") == 0
    assert value("warmctl_instance_outstanding_requests", instance="a") == 3
    assert value("warmctl_instance_draining", instance="b") == 1
    assert value("warmctl_model_operations_total", instance="b", action="load",
                 trigger="api", outcome="ok") == 1
    assert value("warmctl_model_state", instance="a", model="m", state="ready") == 1
    assert value("warmctl_model_state", instance="b", model="m", state="cold") == 1
    assert value("warmctl_model_level", instance="b", model="m", level="cold") == 1
    assert value("warmctl_plan_decision", instance="cp", model="m", decision="keep") == 1
    assert value("warmctl_fleet_actions_total", instance="b", kind="drain",
                 outcome="unloaded") == 1
