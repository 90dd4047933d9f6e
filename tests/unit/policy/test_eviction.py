from __future__ import annotations

import pytest

from controlplane.policy.budget import BudgetPacking, PackCandidate, guest_occupancy
from controlplane.policy.eviction import Candidate, choose


def names(candidates: tuple[Candidate, ...]) -> list[str]:
    return [c.name for c in candidates]


def test_guests_go_first_whatever_they_would_cost() -> None:
    eviction = choose([Candidate("hot", 1000.0, 0.9, guest=False),
                       Candidate("guest", 1000.0, 5.0, guest=True)], 800.0)
    assert names(eviction.victims) == ["guest"]
    assert eviction.cost == 0.0  # a guest's loss does not count against the room made


def test_the_model_needed_furthest_ahead_goes_first() -> None:
    # Same size; "soon" is likely requested before it could be back, "later" is not.
    eviction = choose([Candidate("soon", 500.0, 0.95, guest=False),
                       Candidate("later", 500.0, 0.05, guest=False)], 400.0)
    assert names(eviction.victims) == ["later"]
    assert eviction.cost == pytest.approx(0.05)


def test_a_big_model_is_not_evicted_to_free_a_little() -> None:
    # Per MB the big hot model is cheapest (7 / 2400), but only 200 MB are needed: the small
    # one that frees them costs one cold start, not seven.
    eviction = choose([Candidate("big", 2400.0, 7.0, guest=False),
                       Candidate("small", 250.0, 1.0, guest=False)], 200.0)
    assert names(eviction.victims) == ["small"]


def test_several_cheap_models_beat_one_dear_one_when_they_free_enough() -> None:
    candidates = [Candidate("big", 2400.0, 7.0, guest=False)] + [
        Candidate(f"s{i}", 300.0, 0.5, guest=False) for i in range(5)]
    eviction = choose(candidates, 1400.0)
    assert sorted(names(eviction.victims)) == ["s0", "s1", "s2", "s3", "s4"]
    assert eviction.cost == pytest.approx(2.5) and eviction.covers(1400.0)


def test_what_a_later_pick_makes_unnecessary_is_kept() -> None:
    eviction = choose([Candidate("tiny", 50.0, 0.0, guest=False),
                       Candidate("mid", 600.0, 0.3, guest=False)], 600.0)
    assert names(eviction.victims) == ["mid"]


def test_not_enough_room_is_reported() -> None:
    eviction = choose([Candidate("a", 100.0, 0.1, guest=False)], 500.0)
    assert not eviction.covers(500.0) and names(eviction.victims) == ["a"]


def test_guest_occupancy_of_poisson_arrivals() -> None:
    assert guest_occupancy(0.0, 10.0) == 0.0
    assert guest_occupancy(0.1, 10.0) == pytest.approx(0.5)  # one request per load time
    assert guest_occupancy(0.5, 16.0) == pytest.approx(8 / 9)


def test_packing_counts_the_memory_a_busy_model_would_hold_anyway() -> None:
    # Budget 3000 MB. "busy" (2000 MB) is worth less per GB*s than "a" and "b" (1000 MB each),
    # but left out it would be loading 90% of the time anyway: keeping it costs 200 MB.
    candidates = [PackCandidate("a", 1000.0, 0.02, held=True),
                  PackCandidate("b", 1000.0, 0.015, held=True),
                  PackCandidate("busy", 2000.0, 0.01, held=False, occupancy=0.9)]
    packing = BudgetPacking()
    packing.pack(0.0, 3000.0, candidates)
    assert packing.left_out == {"b"}
    # Without the occupancy, busy is the one left out.
    plain = BudgetPacking()
    plain.pack(0.0, 3000.0, [PackCandidate(c.name, c.memory_mb, c.density, c.held)
                             for c in candidates])
    assert plain.left_out == {"busy"}


def test_packing_sets_aside_room_for_the_demand_loads_of_what_is_left_out() -> None:
    packing = BudgetPacking()
    packing.pack(0.0, 2500.0, [PackCandidate("a", 1000.0, 0.02, held=True),
                               PackCandidate("b", 1000.0, 0.015, held=True),
                               PackCandidate("c", 1000.0, 0.01, held=False, occupancy=0.3)])
    # c's 300 MB of demand loads are set aside first: a and b fit in the rest, c does not.
    assert packing.left_out == {"c"}
    assert packing.excludes("c", 0.01, held=False)
    assert not packing.excludes("a", 0.02, held=True)
