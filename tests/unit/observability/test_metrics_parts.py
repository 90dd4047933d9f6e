"""Pieces of /metrics that need no control plane: Triton restarts, scheduler actions, the
families of a fleet."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from controlplane.lifecycle.states import ModelState
from controlplane.observability.families import (
    GatewayFigures,
    InstanceFigures,
    Snapshot,
    StoreFigures,
    families,
)
from controlplane.observability.feeds import WAIT_BUCKETS, Histogram
from controlplane.observability.metrics import Metrics, TritonWatch
from controlplane.observability.status import (
    InstanceStatus,
    MemoryLevel,
    ModelOverview,
    ReplicaOverview,
    StatusView,
)
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
    labelled by their own Triton instance; fleet-wide decisions by nothing of ours (the
    scrape target is the control plane)."""
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
               for family in families(snap) for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("warmctl_triton_up", triton_instance="a") == 1
    assert value("warmctl_triton_up", triton_instance="b") == 0
    assert value("warmctl_instance_outstanding_requests", triton_instance="a") == 3
    assert value("warmctl_instance_draining", triton_instance="b") == 1
    assert value("warmctl_model_operations_total", triton_instance="b", action="load",
                 trigger="api", outcome="ok") == 1
    assert value("warmctl_model_state", triton_instance="a", model="m", state="ready") == 1
    assert value("warmctl_model_state", triton_instance="b", model="m", state="cold") == 1
    assert value("warmctl_model_level", triton_instance="b", model="m", level="cold") == 1
    assert value("warmctl_plan_decision", model="m", decision="keep") == 1
    assert value("warmctl_fleet_actions_total", triton_instance="b", kind="drain",
                 outcome="unloaded") == 1


def test_no_family_of_ours_has_a_label_prometheus_owns() -> None:
    """Prometheus sets ``instance`` and ``job`` to the scrape target's (a scraped one becomes
    ``exported_instance``): a snapshot with every part present, so every family has samples
    and every label of ours is seen."""
    wait = Histogram(WAIT_BUCKETS)
    wait.observe(0.3)
    figures = InstanceFigures(
        name="a", events={("load", "api", "ok"): 1},
        durations={("load", "api", "ok"): wait.copy()}, phases={"probe": wait.copy()},
        triton_up=True, restarts=1, outages=1,
        triton_info={"grpc_url": "127.0.0.1:8001", "metrics_url": "http://x/metrics"},
        outstanding=0, draining=False, requests=5, probes={"m": (3, 0)})
    status = StatusView(
        at=0.0, minutes=1, first_minute=0, next_preloads=[], rollouts=[],
        instances=[InstanceStatus(
            name="a", triton="live", triton_reason=None, restarts_in_window=0, grpc_url=None,
            metrics_url=None, memory=[MemoryLevel(level="cpu", resident_mb=10.0,
                                                  budget_mb=100.0)])],
        models=[ModelOverview(
            name="m", instance="a", state=ModelState.READY, reason=None, level="cpu",
            pinned=False, held=False, replicas=1, memory_mb=10.0, last_load=None, requests=5,
            cold_starts=1, per_minute=[5], decision="keep", why="hot", preload_at=None,
            instances=[ReplicaOverview(instance="a", state=ModelState.READY, level="cpu",
                                       routable=True)])])
    snap = Snapshot(requests={("m", "OK"): 5}, cold_starts={"m": 1}, waits={"m": wait},
                    recorder=(1, {"full": 2}, 5, 0), actions={("load", "ok"): 1},
                    gateway=GatewayFigures(0, 0, 1024, {"max_buffered_bytes": 2}, ("bad",)),
                    instances=[figures], fleet_actions={("a", "add replica", "ok"): 1},
                    status=status,
                    store=StoreFigures("unwritable", {"state": 1}, {"records": 5},
                                       {("records", "full"): 2}))
    found = list(families(snap))
    assert len(found) >= 25 and all(f.samples for f in found), \
        [f.name for f in found if not f.samples]
    labels = {name for f in found for s in f.samples for name in s.labels}
    assert "triton_instance" in labels and {"model", "state", "level"} <= labels
    assert not labels & {"instance", "job"}, sorted(labels)


def test_probe_gauges_show_ready_replicas_whose_probes_failed() -> None:
    """m is ready on a, where every probe of its load failed, and was on b (cold now):
    only the replica that serves is shown."""
    status = StatusView(at=0.0, minutes=1, first_minute=0, instances=[], next_preloads=[],
                        rollouts=[], models=[ModelOverview(
                            name="m", instance="a", state=ModelState.READY, reason=None,
                            level="cpu", pinned=False, held=False, replicas=1,
                            memory_mb=None, last_load=None, requests=0, cold_starts=0,
                            per_minute=[0], decision=None, why=None, preload_at=None,
                            instances=[ReplicaOverview(instance="a", state=ModelState.READY,
                                                       level="cpu", routable=True),
                                       ReplicaOverview(instance="b", state=ModelState.COLD,
                                                       level="cold", routable=False)])])

    def figures(name: str, probes: dict[str, tuple[int, int]]) -> InstanceFigures:
        return InstanceFigures(name=name, events={}, durations={}, phases={}, triton_up=True,
                               restarts=0, outages=0, triton_info=None, outstanding=0,
                               draining=False, probes=probes)

    snap = Snapshot(requests={}, cold_starts={}, waits={}, recorder=None, actions={},
                    gateway=None, instances=[figures("a", {"m": (4, 4)}),
                                             figures("b", {"m": (2, 0)})],
                    fleet_actions={}, status=status)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families(snap) for s in family.samples
               if s.name.startswith("warmctl_model_probe_")}
    on_a = (("model", "m"), ("triton_instance", "a"))
    assert samples == {("warmctl_model_probe_requests", on_a): 4,
                       ("warmctl_model_probe_failures", on_a): 4}
