"""The instance state table: allowed moves, refused ones by name, the supervisor's view laid
over a started phase, and ``routable`` derived from both."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from controlplane.fleet.states import (
    STARTED,
    TRANSITIONS,
    InstanceState,
    InvalidInstanceTransition,
    check,
)
from controlplane.store.database import Database
from controlplane.triton.watched import TritonState
from tests.unit.fleet.support import make_fleet, runtime

S = InstanceState


def test_the_join_and_leave_paths_are_allowed() -> None:
    for path in ([S.PROVISIONING, S.WARMING, S.SERVING, S.DRAINING, S.RETIRED],
                 [S.PROVISIONING, S.WARMING, S.STANDBY, S.SERVING],
                 [S.PROVISIONING, S.SERVING, S.DRAINING, S.SERVING],
                 [S.STANDBY, S.DRAINING, S.STANDBY],
                 [S.PROVISIONING, S.RETIRED]):
        for a, b in itertools.pairwise(path):
            assert check("x", a, b) is b


@pytest.mark.parametrize(("a", "b"), [(S.RETIRED, S.SERVING), (S.SERVING, S.WARMING),
                                      (S.PROVISIONING, S.STANDBY), (S.SERVING, S.SERVING),
                                      (S.SERVING, S.DOWN), (S.WARMING, S.PROVISIONING)])
def test_other_moves_are_refused_by_name(a: InstanceState, b: InstanceState) -> None:
    with pytest.raises(InvalidInstanceTransition, match=f"'x' is {a.value}: it cannot "
                                                        f"become {b.value}"):
        check("x", a, b)


def test_down_and_restarting_are_never_phases() -> None:
    assert S.DOWN not in TRANSITIONS and S.RESTARTING not in TRANSITIONS
    assert all(S.DOWN not in to and S.RESTARTING not in to for to in TRANSITIONS.values())
    assert {S.WARMING, S.STANDBY, S.SERVING, S.DRAINING} == STARTED


async def test_routable_derives_from_the_phase_and_the_supervisor(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a",))
    rt = fleet.order[0]
    sup = runtime(rt)[1]
    assert rt.state is S.SERVING and rt.routable and not rt.draining
    sup.serving = False
    assert rt.state is S.DOWN and not rt.routable
    sup.state = TritonState.RESTARTING
    assert rt.state is S.RESTARTING
    sup.serving, sup.state = True, TritonState.LIVE
    rt.move(S.DRAINING, "test")
    assert rt.state is S.DRAINING and rt.draining and not rt.routable
    assert rt.phase_reason == "test"
    rt.move(S.SERVING, "resumed")
    assert rt.routable
    with pytest.raises(InvalidInstanceTransition):
        rt.move(S.WARMING, "no")
    assert rt.state is S.SERVING  # a refused move changes nothing
