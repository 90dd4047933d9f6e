"""The open-sequence table: where each sequence lives, idle expiry, bounds."""

from __future__ import annotations

from controlplane.fleet.sequences import Sequences


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sequence_is_found_where_it_started_until_it_ends() -> None:
    clock = Clock()
    table = Sequences(lambda model: 2.0, clock=clock)
    table.opened("acc", "7", "a")
    table.opened("acc", "8", "b")
    assert table.where("acc", "7") == "a" and table.where("acc", "8") == "b"
    assert table.where("other", "7") is None  # per model
    assert table.open_on("a") == 1 and table.open_on("a", "acc") == 1
    assert table.open_on("a", "other") == 0
    table.ended("acc", "7")
    assert table.where("acc", "7") is None and table.open_on("a") == 0


def test_an_idle_sequence_expires_with_the_models_idle_limit_and_activity_renews_it() -> None:
    clock = Clock()
    table = Sequences(lambda model: 2.0 if model == "acc" else 10.0, clock=clock)
    table.opened("acc", "1", "a")
    table.opened("slow", "1", "a")
    clock.now += 1.5
    assert table.where("acc", "1") == "a"  # a step: active again
    clock.now += 1.5
    assert table.open_on("a") == 2
    clock.now += 1.0  # 2.5 s since its last step: Triton has freed its slot
    assert table.open_on("a") == 1 and table.where("acc", "1") is None
    assert table.where("slow", "1") == "a"


def test_the_table_is_bounded_and_forgets_the_least_recently_used() -> None:
    table = Sequences(lambda model: 60.0, max_open=3, clock=Clock())
    for corrid in "abcd":
        table.opened("acc", corrid, "x")
    assert len(table) == 3 and table.where("acc", "a") is None
    assert table.where("acc", "d") == "x"


def test_an_instance_that_died_loses_its_sequences() -> None:
    table = Sequences(lambda model: 60.0, clock=Clock())
    table.opened("acc", "1", "a")
    table.opened("acc", "2", "b")
    table.forget("a")
    assert table.where("acc", "1") is None and table.where("acc", "2") == "b"
