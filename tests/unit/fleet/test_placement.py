"""Replicas applied from the policy's decisions, and each instance's own budget."""

from __future__ import annotations

from pathlib import Path

from controlplane.config import FleetSettings
from controlplane.fleet.placement import ReplicaPlacer
from controlplane.lifecycle.states import ModelState
from controlplane.policy.types import ModelDecision
from controlplane.store.database import Database
from tests.unit.fleet.support import make_fleet, runtime


def _decision(model: str, per_day: float, decision: str = "keep") -> ModelDecision:
    return ModelDecision(model, per_day, 0.0, 0.0, decision, None, "test")  # type: ignore[arg-type]


def _ready_on(fleet: object, model: str) -> list[str]:
    return sorted(s.instance for s in fleet.replicas(model)  # type: ignore[attr-defined]
                  if s.state is ModelState.READY)


async def _settle(placer: ReplicaPlacer) -> None:
    await placer.background.settle()


async def test_a_hot_model_gains_replicas_and_loses_them_when_it_cools(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b", "c"))
    placer = ReplicaPlacer(fleet, FleetSettings(replica_rate_per_s=1.0))
    await fleet.load("hot", trigger="gateway")
    first = _ready_on(fleet, "hot")
    plan = await placer.apply([_decision("hot", 2.5 * 86400)])  # 2.5 req/s: 3 replicas
    await _settle(placer)
    assert plan.target("hot") == 3 and len(plan.instances_of("hot")) == 3
    assert _ready_on(fleet, "hot") == ["a", "b", "c"]
    assert plan.instances_of("hot")[0] == first[0]  # the one it had is kept
    plan = await placer.apply([_decision("hot", 0.5 * 86400)])  # cooled: one is enough
    await _settle(placer)
    assert _ready_on(fleet, "hot") == list(plan.instances_of("hot")) == first
    kinds = [(a.kind, a.outcome) for a in fleet.actions]
    assert kinds.count(("add replica", "ok")) == 2 and kinds.count(("remove replica", "ok")) == 2


async def test_replicas_are_only_added_beside_a_ready_one(tmp_path: Path,
                                                        database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    placer = ReplicaPlacer(fleet, FleetSettings(replica_rate_per_s=1.0))
    plan = await placer.apply([_decision("hot", 5 * 86400)])
    await _settle(placer)
    assert len(plan.instances_of("hot")) == 2  # planned ...
    assert _ready_on(fleet, "hot") == []  # ... but its first load is the scheduler's
    assert all(not runtime(rt)[0].loads for rt in fleet.order)


async def test_a_full_instance_evicts_its_replicated_idle_models_first(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b"), budget_mb=250)
    placer = ReplicaPlacer(fleet, FleetSettings())
    a = fleet.order[0]
    assert a.manager is not None
    a.manager.before_load.append(lambda model, trigger: placer.make_room(a, model))
    for model in ("warm", "rare"):
        await fleet.load(model, trigger="replica", instance="a")
    await fleet.load("warm", trigger="replica", instance="b")  # warm has a replica elsewhere
    await fleet.load("hot", trigger="api", instance="a")  # 300 MB on a 250 MB instance
    assert _ready_on(fleet, "warm") == ["b"] and _ready_on(fleet, "rare") == ["a"]
    assert _ready_on(fleet, "hot") == ["a"]
    assert fleet.used_mb(a) == 200


async def test_the_plan_leaves_out_models_with_no_replica_to_place_or_trim(
        tmp_path: Path, database: Database) -> None:
    """A cold model the policy does not want has nothing to place or trim: it is not in the
    plan (at 10,000 models, most of them; bench/planning.py), a resident one still is."""
    fleet = await make_fleet(tmp_path, database, ("a", "b"))
    placer = ReplicaPlacer(fleet, FleetSettings(replica_rate_per_s=1.0))
    await fleet.load("hot", trigger="gateway")
    demands = placer.demands([_decision("hot", 0.0, "unload"), _decision("rare", 0.0, "lazy"),
                              _decision("warm", 86400.0, "keep")])
    assert [(d.model, d.wanted) for d in demands] == [("hot", False), ("warm", True)]
    plan = await placer.apply([_decision("hot", 0.0, "unload"), _decision("rare", 0.0, "lazy")])
    await _settle(placer)
    assert "rare" not in plan.replicas and plan.target("rare") == 0
    assert plan.target("hot") == 0 and "hot" in plan.replicas
