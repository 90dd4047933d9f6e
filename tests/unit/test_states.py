from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.lifecycle.states import (
    TRANSITIONS,
    Cause,
    ModelKey,
    ModelState,
    ModelStatus,
    check_transition,
    ready_versions,
    state_from_index,
)
from controlplane.triton.client import IndexEntry


def entry(state: str | None, reason: str = "", version: str | None = "1") -> IndexEntry:
    return IndexEntry("m", version, state, reason)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], (ModelState.COLD, None)),
        ([entry(None, version=None)], (ModelState.COLD, None)),
        ([entry("READY")], (ModelState.READY, None)),
        ([entry("UNAVAILABLE", "unloaded")], (ModelState.COLD, None)),
        ([entry("UNAVAILABLE", "boom")], (ModelState.FAILED, "boom")),
        ([entry("UNAVAILABLE", "unloaded"), entry("READY", version="2")],
         (ModelState.READY, None)),
        ([entry("LOADING")], (ModelState.LOADING, "loading in Triton")),
        ([entry("UNLOADING")], (ModelState.UNLOADING, "unloading in Triton")),
    ],
)
def test_index_maps_to_state(
    entries: list[IndexEntry], expected: tuple[ModelState, str | None]
) -> None:
    assert state_from_index(entries) == expected


def test_ready_versions_are_those_triton_serves_in_numeric_order() -> None:
    entries = [entry("READY", version="10"), entry("UNAVAILABLE", "unloaded", version="3"),
               entry("READY", version="2"), entry(None, version=None)]
    assert ready_versions(entries) == ("2", "10")
    status = ModelStatus("m", "default", ModelState.READY, None, datetime.now(UTC), False,
                         None, None, False, versions=("2", "10"))
    assert status.keys == (ModelKey("m", "2"), ModelKey("m", "10"))


S = ModelState


@pytest.mark.parametrize(
    ("was", "now", "cause"),
    [
        (S.COLD, S.LOADING, Cause.LOAD),
        (S.LOADING, S.WARMING, Cause.PROBE),
        (S.WARMING, S.READY, Cause.LOADED),
        (S.READY, S.READY, Cause.LOAD_FAILED),  # a failed reload: the old version serves
        (S.FAILED, S.READY, Cause.ADOPT),  # Triton finished a load we timed out on
        (S.UNLOADING, S.READY, Cause.UNLOAD_FAILED),
        (S.WARMING, S.COLD, Cause.TRITON_DOWN),
        (S.READY, S.FAILED, Cause.LOST),
    ],
)
def test_transitions_the_lifecycle_makes_are_allowed(
    was: ModelState, now: ModelState, cause: Cause
) -> None:
    assert check_transition(was, now, cause) is None


@pytest.mark.parametrize(
    ("was", "now", "cause"),
    [
        (S.COLD, S.READY, Cause.LOADED),  # our loads pass through loading
        (S.COLD, S.WARMING, Cause.PROBE),
        (S.READY, S.WARMING, Cause.ADOPT),  # warming is ours alone: Triton never shows it
        (S.FAILED, S.COLD, Cause.ADOPT),  # Triton forgets failures: the back-off stands
        (S.FAILED, S.LOADING, Cause.ADOPT),
        (S.COLD, S.COLD, Cause.ADOPT),
        (S.COLD, S.COLD, Cause.TRITON_DOWN),
        (S.LOADING, S.COLD, Cause.UNLOADED),
    ],
)
def test_transitions_outside_the_table_are_named(
    was: ModelState, now: ModelState, cause: Cause
) -> None:
    problem = check_transition(was, now, cause)
    assert problem is not None
    assert problem.startswith(f"illegal transition {was.value} -> {now.value} ({cause.value})")


def test_only_our_probe_enters_warming_and_every_cause_is_used() -> None:
    into_warming = {(t.cause, s) for t in TRANSITIONS if ModelState.WARMING in t.targets
                    for s in t.sources}
    assert into_warming == {(Cause.PROBE, ModelState.LOADING)}
    assert {t.cause for t in TRANSITIONS} == set(Cause)
    assert all(t.when for t in TRANSITIONS)
