"""Health checks' decisions on a fake clock: when a replica is probed, what fails a probe,
the reload back-off, and what routing does with an unhealthy replica (fleets of real
ModelManagers on fake Tritons; the probe itself is scripted)."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from controlplane.config import HealthSettings
from controlplane.errors import TritonUnavailable
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.health import HealthChecker
from controlplane.fleet.health_probe import HealthSchedule, ProbeResult, verdict
from controlplane.fleet.replicas import FleetReplicas
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.table import routing_table
from controlplane.lifecycle.states import ModelState
from controlplane.store.database import Database
from controlplane.traffic.observation import Observation
from tests.unit.fleet.support import make_fleet, runtime

OPTIONS = HealthSettings(interval_s=10, jitter=0.2, reload_initial_s=5, reload_max_s=20)
KEY = ("a", "hot")


def _schedule() -> HealthSchedule:
    return HealthSchedule(OPTIONS, random.Random(7))


def test_intervals_are_jittered_within_bounds() -> None:
    s = _schedule()
    draws = [s.interval() for _ in range(2000)]
    assert all(8.0 <= d <= 12.0 for d in draws)
    assert min(draws) < 8.2 and max(draws) > 11.8  # spread over the whole range
    flat = HealthSchedule(OPTIONS.model_copy(update={"jitter": 0.0}))
    assert {flat.interval() for _ in range(10)} == {10.0}


def test_a_replica_is_probed_after_an_interval_unless_traffic_proved_it() -> None:
    s = _schedule()
    assert not s.should_probe(KEY, 100.0)  # first seen: its load probed it just now
    first = s.next_at[KEY]
    assert 108.0 <= first <= 112.0
    assert not s.should_probe(KEY, first - 0.01)
    assert s.should_probe(KEY, first)  # no traffic at all: probed
    again = s.next_at[KEY]
    assert again >= first + 8.0

    s.served(KEY, again - 3.0)  # a real request answered well within the interval
    assert not s.should_probe(KEY, again)  # skipped...
    later = s.next_at[KEY]
    assert later > again  # ...and looked at again one interval on
    assert s.should_probe(KEY, later + 10.0)  # that request is older than the interval now


def test_reloads_back_off_and_a_recovery_resets_them() -> None:
    s = _schedule()
    assert not s.reload_due(KEY, 0.0)  # healthy: nothing to reload
    s.failed(KEY, 100.0)  # marked unhealthy
    assert not s.reload_due(KEY, 104.9) and s.reload_due(KEY, 105.0)
    s.failed(KEY, 106.0)  # the reload's probe failed too
    assert s.retry_in(KEY, 106.0) == 10.0
    s.failed(KEY, 117.0)
    s.failed(KEY, 140.0)
    assert s.retry_in(KEY, 140.0) == 20.0  # capped at reload_max_s
    s.recovered(KEY, 161.0)
    assert KEY not in s.backoff and not s.reload_due(KEY, 161.0)
    assert s.next_at[KEY] >= 169.0
    s.failed(KEY, 200.0)
    assert s.retry_in(KEY, 200.0) == 5.0  # a later failure starts over


def test_what_fails_a_probe() -> None:
    ok = ProbeResult(latency_s=0.002)
    assert verdict(ok, 0.001, OPTIONS) is None
    assert verdict(ok, None, OPTIONS) is None  # no converged latency: no latency rule
    error = verdict(ProbeResult(None, "INTERNAL: boom", "INTERNAL"), 0.001, OPTIONS)
    assert error == "health probe failed: INTERNAL: boom"
    nan = verdict(ProbeResult(0.001, "non-finite output 'OUTPUT0'"), 0.001, OPTIONS)
    assert nan is not None and "non-finite" in nan
    # 10x its converged latency but under the 100 ms floor: jitter, not a fault
    assert verdict(ProbeResult(0.050), 0.001, OPTIONS) is None
    slow = verdict(ProbeResult(0.250), 0.020, OPTIONS)
    assert slow is not None and "above 200.0 ms" in slow and "20.0 ms" in slow
    assert verdict(ProbeResult(0.150), 0.020, OPTIONS) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted(HealthChecker):
    """The probe answers what the test says, per instance (None: passes)."""

    def __init__(self, fleet: Fleet, clock: Clock) -> None:
        super().__init__(fleet, OPTIONS, clock=clock, rng=random.Random(1))
        self.answers: dict[str, str | None] = {}
        self.probed: list[tuple[str, str]] = []

    async def _probe(self, rt: InstanceRuntime, model: str) -> str | None:
        self.probed.append((rt.name, model))
        return self.answers.get(rt.name)


async def _fleet(tmp_path: Path, database: Database) -> tuple[Fleet, Scripted, Clock, list[int]]:
    fleet = await make_fleet(tmp_path, database, ("a", "b"), pinned=("hot",))
    published: list[int] = []

    async def publish() -> None:
        published.append(1)
    fleet.publish = publish
    for i, rt in enumerate(fleet.order):
        rt.probe = cast(Any, object())  # warm-up on: the replica has probe inputs
        rt.instance = cast(Any, SimpleNamespace(grpc_url=f"127.0.0.1:{9000 + i}",
                                                http_url=None))
        await fleet.load("hot", trigger="replica", instance=rt.name)
    clock = Clock()
    return fleet, Scripted(fleet, clock), clock, published


def _observation(instance: str, outcome: str) -> Observation:
    return Observation("hot", "", (), 0.0, 0.001, outcome, False, None, instance=instance)


async def test_a_failing_replica_leaves_routing_and_returns_once_it_passes(
        tmp_path: Path, database: Database) -> None:
    fleet, checker, clock, published = await _fleet(tmp_path, database)
    a, b = fleet.order
    await checker.step()  # first sight: nothing probed
    assert checker.probed == []
    checker.answers["a"] = "health probe failed: INTERNAL: boom"
    clock.now += 12.1
    # b answered real traffic well meanwhile: only a is probed; a request that failed on a
    # proves nothing
    checker.observation(_observation("b", "OK"))
    checker.observation(_observation("a", "INTERNAL"))
    await checker.step()
    assert checker.probed == [("a", "hot")]
    assert a.unhealthy == {"hot": "health probe failed: INTERNAL: boom"}
    assert not a.serves("hot") and b.serves("hot") and published
    assert routing_table(fleet, 1).serving == {"hot": {"b": 1.0}}
    assert fleet.router.pick("hot") is b
    assert [(x.kind, x.instance, x.outcome) for x in fleet.actions] == [
        ("health", "a", "unhealthy")]

    # still broken at its first reload: reloaded (unloaded, loaded), out of routing still
    fake_a, _ = runtime(a)
    loads = len(fake_a.loads)
    clock.now += OPTIONS.reload_initial_s - 0.1
    await checker.step()  # its back-off is not over yet
    await checker.background.settle()
    assert fake_a.unloads == [] and len(fake_a.loads) == loads
    clock.now += 0.1
    await checker.step()
    await checker.background.settle()
    assert fake_a.unloads == ["hot"] and len(fake_a.loads) == loads + 1
    assert not a.serves("hot") and checker.schedule.backoff[("a", "hot")].failures == 2
    assert a.manager is not None and a.manager.state("hot") is ModelState.READY
    clock.now += 5.0  # within the doubled back-off: no reload
    await checker.step()
    await checker.background.settle()
    assert checker.schedule.backoff[("a", "hot")].failures == 2 and len(fake_a.unloads) == 1

    checker.answers["a"] = None  # it recovered
    clock.now += 5.0
    await checker.step()
    await checker.background.settle()
    assert a.unhealthy == {} and a.serves("hot")
    assert routing_table(fleet, 2).serving == {"hot": {"a": 1.0, "b": 1.0}}
    assert fleet.actions[-1].outcome == "recovered"


async def test_every_replica_unhealthy_answers_unavailable_with_the_reasons(
        tmp_path: Path, database: Database) -> None:
    fleet, checker, clock, _ = await _fleet(tmp_path, database)
    replicas = FleetReplicas(fleet)
    await checker.step()
    checker.answers = {"a": "health probe failed: non-finite output 'OUTPUT0'",
                       "b": "health probe failed: no answer within 10s"}
    clock.now += 12.1
    await checker.step()
    assert replicas.route("hot") is None
    with pytest.raises(TritonUnavailable) as raised:
        await replicas.wait_ready("hot", 5.0)
    message = raised.value.message
    assert "every replica is unhealthy" in message
    assert "a: health probe failed: non-finite" in message and "b: health probe failed: no " \
        "answer" in message
    # one healthy replica again: requests wait for nothing and go there
    del fleet.runtime("b").unhealthy["hot"]
    assert replicas.unhealthy("hot") is None
    await replicas.wait_ready("hot", 5.0)
    assert replicas.route("hot") is fleet.runtime("b")


async def test_a_replica_unloaded_meanwhile_is_forgotten(tmp_path: Path,
                                                         database: Database) -> None:
    fleet, checker, clock, _ = await _fleet(tmp_path, database)
    a = fleet.runtime("a")
    await checker.step()
    checker.answers["a"] = "health probe failed: boom"
    clock.now += 12.1
    await checker.step()
    assert "hot" in a.unhealthy
    await fleet.unload("hot", trigger="replica", instance="a", force=True)
    clock.now += OPTIONS.reload_initial_s
    await checker.step()
    await checker.background.settle()
    assert a.unhealthy == {} and ("a", "hot") not in checker.schedule.backoff
    assert a.manager is not None and a.manager.state("hot") is ModelState.COLD
