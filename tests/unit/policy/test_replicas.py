from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence

import pytest

from controlplane.policy.replicas import (
    InstanceCapacity,
    ReplicaDemand,
    ReplicaOptions,
    ReplicaPlan,
    plan_replicas,
)

OPTS = ReplicaOptions(rate_per_replica=5.0, pinned_replicas=2, max_replicas=0)


def fleet(*budgets: float, down: Collection[str] = ()) -> list[InstanceCapacity]:
    names = "abcdefgh"
    return [InstanceCapacity(names[k], b, accepting=names[k] not in down)
            for k, b in enumerate(budgets)]


def want(model: str, rate: float, memory_mb: float = 100.0, **kw: object) -> ReplicaDemand:
    return ReplicaDemand(model, memory_mb, rate, wanted=True, **kw)  # type: ignore[arg-type]


def plan(demands: Sequence[ReplicaDemand], instances: Sequence[InstanceCapacity],
         current: Mapping[str, Collection[str]] | None = None,
         options: ReplicaOptions = OPTS) -> ReplicaPlan:
    return plan_replicas(demands, instances, current or {}, options)


def assert_within_budgets(result: ReplicaPlan, demands: Sequence[ReplicaDemand],
                          instances: Sequence[InstanceCapacity]) -> None:
    memory = {d.model: d.memory_mb for d in demands}
    for inst in instances:
        on = result.on(inst.name)
        assert sum(memory[m] for m in on) <= inst.budget_mb + 1e-6, (inst.name, on)
        if not inst.accepting:
            assert on == ()


def test_hot_model_gets_ceil_rate_over_rate_per_replica_on_distinct_instances() -> None:
    result = plan([want("hot", 12.0)], fleet(1000, 1000, 1000, 1000))
    assert result.target("hot") == 3
    placed = result.instances_of("hot")
    assert len(placed) == 3 and len(set(placed)) == 3
    assert result.unplaced == {}
    assert "hot: 12 req/s forecast, 3 replicas at 5 req/s each" in result.replicas["hot"][0].why


def test_exact_multiple_of_rate_does_not_round_up() -> None:
    assert plan([want("m", 10.0)], fleet(1000, 1000, 1000)).target("m") == 2


def test_rare_wanted_model_gets_one_and_unwanted_gets_none() -> None:
    demands = [want("rare", 0.0001), ReplicaDemand("idle", 100.0, 3.0, wanted=False)]
    result = plan(demands, fleet(1000, 1000), current={"idle": ["a", "b"]})
    assert result.instances_of("rare") == ("a",)
    assert result.instances_of("idle") == ()
    assert result.replicas["idle"] == ()
    assert result.target("idle") == 0
    assert "idle" not in result.unplaced


def test_pinned_gets_pinned_replicas_even_when_idle_and_is_placed_first() -> None:
    # b only has room for one 600 MB model: the pinned one wins it over a hotter unpinned one.
    demands = [want("hot", 4.0, 600.0), want("pin", 0.0, 600.0, pinned=True)]
    result = plan(demands, fleet(600, 600))
    assert result.target("pin") == 2
    assert set(result.instances_of("pin")) == {"a", "b"}
    assert result.instances_of("hot") == ()
    assert "no other accepting instance has 600 MB free" in result.unplaced["hot"]
    assert list(result.replicas) == ["pin", "hot"]
    assert result.replicas["pin"][0].why.startswith("pinned: ")


def test_pinned_replicas_grow_with_rate() -> None:
    result = plan([want("pin", 14.0, pinned=True)], fleet(1000, 1000, 1000, 1000))
    assert result.target("pin") == 3


def test_caps_max_replicas_and_demand_max_replicas_and_instance_count() -> None:
    instances = fleet(1000, 1000, 1000, 1000)
    assert plan([want("m", 100.0)], instances).target("m") == 4  # 0: one per instance
    capped = plan([want("m", 100.0)], instances, options=ReplicaOptions(max_replicas=2))
    assert capped.target("m") == 2 and len(capped.instances_of("m")) == 2
    assert "capped from 20" in capped.replicas["m"][0].why
    stateful = plan([want("s", 100.0, max_replicas=1)], instances)
    assert stateful.instances_of("s") == ("a",) and stateful.unplaced == {}
    pinned_stateful = plan([want("p", 0.0, pinned=True, max_replicas=1)], instances)
    assert pinned_stateful.target("p") == 1


def test_new_replica_goes_to_the_instance_with_most_free_budget() -> None:
    demands = [want("big", 1.0, 700.0), want("small", 0.5, 100.0)]
    result = plan(demands, fleet(1000, 800, 900))
    assert result.instances_of("big") == ("a",)  # a has most free (1000)
    assert result.instances_of("small") == ("c",)  # a 300, b 800, c 900 free
    assert "900 MB free" in result.replicas["small"][0].why


def test_budget_is_respected_per_instance_counting_every_replica() -> None:
    rng = random.Random(3)
    for _ in range(200):
        instances = fleet(*(rng.choice([300.0, 800.0, 2000.0, math.inf])
                            for _ in range(rng.randint(1, 5))),
                          down=rng.sample("abcde", rng.randint(0, 2)))
        demands = [ReplicaDemand(f"m{k}", rng.choice([50.0, 200.0, 500.0, 900.0]),
                                 rng.choice([0.0, 0.5, 6.0, 30.0]), wanted=rng.random() < 0.8,
                                 pinned=rng.random() < 0.1) for k in range(12)]
        current = {d.model: rng.sample("abcde", rng.randint(0, 3)) for d in demands}
        result = plan(demands, instances, current)
        assert_within_budgets(result, demands, instances)
        for d in demands:
            placed = result.instances_of(d.model)
            assert len(placed) == len(set(placed))
            assert len(placed) <= result.target(d.model)
            assert (d.model in result.unplaced) == (len(placed) < result.target(d.model))
        # Deterministic, and a fixed point: applying the plan and planning again moves nothing.
        assert plan(demands, instances, current) == result
        applied = {m: result.instances_of(m) for m in result.replicas}
        again = plan(demands, instances, applied)
        assert {m: set(again.instances_of(m)) for m in again.replicas} == {
            m: set(placed) for m, placed in applied.items()}


def test_current_replicas_are_kept_when_they_still_fit() -> None:
    # By free budget the model would go to c; it is resident on b, so it stays there.
    demands = [want("m", 7.0), want("n", 0.1)]
    current = {"m": ["b", "a"], "n": ["b"]}
    result = plan(demands, fleet(1000, 1000, 5000), current)
    assert result.instances_of("m") == ("a", "b")
    assert result.replicas["m"][0].why.endswith("kept")
    assert result.instances_of("n") == ("b",)


def test_rate_drop_keeps_a_current_replica_and_drops_the_rest() -> None:
    result = plan([want("m", 1.0)], fleet(1000, 1000, 1000), {"m": ["c", "b"]})
    assert result.instances_of("m") == ("b",)


def test_a_current_replica_that_no_longer_fits_gives_way_to_another_current_one() -> None:
    # "pin" takes all of a; "m" is on a and b: it keeps b rather than moving to freer c.
    demands = [want("pin", 0.0, 1000.0, pinned=True, max_replicas=1), want("m", 1.0)]
    result = plan(demands, fleet(1000, 1000, 5000), {"pin": ["a"], "m": ["a", "b"]})
    assert result.instances_of("pin") == ("a",)
    assert result.instances_of("m") == ("b",)
    assert result.replicas["m"][0].why.endswith("kept")


def test_new_replica_avoids_displacing_a_lower_ranked_kept_replica() -> None:
    # a looks freest, but c's 900 MB on it are kept for "warm"; the new hot model goes to b.
    demands = [want("hot", 3.0, 500.0), want("warm", 0.1, 900.0)]
    result = plan(demands, fleet(2000, 1200, 1000), {"warm": ["a"]})
    assert result.instances_of("hot") == ("b",)
    assert result.instances_of("warm") == ("a",)


def test_higher_ranked_model_may_displace_a_kept_replica_when_nothing_else_fits() -> None:
    demands = [want("hot", 3.0, 800.0), want("warm", 0.1, 800.0)]
    result = plan(demands, fleet(1000), {"warm": ["a"]})
    assert result.instances_of("hot") == ("a",)
    assert result.instances_of("warm") == ()
    assert result.unplaced["warm"] == ("asked for 1, placed 0: no other accepting instance has "
                                       "800 MB free (most: a with 200 MB)")


def test_non_accepting_instances_get_nothing_and_keep_nothing() -> None:
    instances = fleet(1000, 1000, 1000, down={"b"})
    result = plan([want("hot", 20.0), want("pin", 0.0, pinned=True)], instances,
                  {"hot": ["b"], "pin": ["b"]})
    assert result.on("b") == ()
    assert set(result.instances_of("hot")) == {"a", "c"}
    assert result.unplaced["hot"] == "asked for 3, placed 2: only 2 instance(s) accepting"
    none = plan([want("m", 1.0)], fleet(1000, down={"a"}))
    assert none.unplaced["m"] == ("asked for 1, placed 0: no instance accepts replicas "
                                  "(all draining or down)")


def test_unlimited_budgets_spread_models_by_memory() -> None:
    demands = [want(f"m{k}", 1.0 - k / 10, 100.0) for k in range(4)]
    result = plan(demands, fleet(math.inf, math.inf))
    assert [result.instances_of(f"m{k}") for k in range(4)] == [("a",), ("b",), ("a",), ("b",)]
    assert "unlimited budget" in result.replicas["m0"][0].why


def test_ties_in_rate_are_broken_by_name() -> None:
    demands = [want("b", 1.0, 600.0), want("a", 1.0, 600.0)]
    result = plan(demands, fleet(1000))
    assert result.instances_of("a") == ("a",) and "b" in result.unplaced
    assert result.on("a") == ("a",)


@pytest.mark.parametrize(("demands", "instances", "options", "message"), [
    ([want("m", 1.0), want("m", 2.0)], fleet(100), OPTS, "demanded twice"),
    ([want("m", -1.0)], fleet(100), OPTS, "rate_per_s"),
    ([want("m", 1.0, math.nan)], fleet(100), OPTS, "memory_mb"),
    ([want("m", 1.0, max_replicas=0)], fleet(100), OPTS, "max_replicas must be >= 1"),
    ([], [InstanceCapacity("a", 1), InstanceCapacity("a", 2)], OPTS, "duplicate instance"),
    ([], [InstanceCapacity("a", -1)], OPTS, "budget_mb"),
    ([], fleet(100), ReplicaOptions(rate_per_replica=0), "rate_per_replica"),
    ([], fleet(100), ReplicaOptions(pinned_replicas=0), "pinned_replicas"),
])
def test_bad_input_is_a_clear_error(demands: list[ReplicaDemand],
                                    instances: list[InstanceCapacity],
                                    options: ReplicaOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_replicas(demands, instances, {}, options)
