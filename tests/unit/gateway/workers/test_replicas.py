"""A worker's view of the fleet: routing by the pushed table alone, sequences kept where they
started, retries only off a replica the table no longer lists, lazy loads asked of the
control process, counts for its reports."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from controlplane.errors import ModelNotFound
from controlplane.gateway.workers.link import ControlLink
from controlplane.gateway.workers.replicas import TableReplicas
from controlplane.serving.facts import Sequence
from controlplane.serving.status import Status
from controlplane.serving.table import InstanceEntry, RoutingTable


class FakeLink:
    """What the replicas ask of the control process, and what they tell it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[str, ...], float]] = []
        self.sent: list[tuple[object, ...]] = []
        self.error: Exception | None = None

    async def ensure(self, model: str, exclude: Collection[str], budget_s: float) -> None:
        self.asked.append((model, tuple(exclude), budget_s))
        if self.error is not None:
            raise self.error

    def send(self, message: tuple[object, ...]) -> None:
        self.sent.append(message)


def _entry(name: str, *, routable: bool = True, epoch: int = 0) -> InstanceEntry:
    return InstanceEntry(name, f"127.0.0.1:{9000 + ord(name)}", None, True, routable,
                         not routable, epoch)


def _replicas() -> tuple[TableReplicas, FakeLink]:
    link = FakeLink()
    return TableReplicas(link), link  # type: ignore[arg-type]


async def test_routes_by_the_table_with_its_weights() -> None:
    replicas, _ = _replicas()
    replicas.apply(RoutingTable(1, (_entry("a"), _entry("b")),
                                {"m": {"a": 1.0, "b": 3.0}}, {"m": frozenset("ab")}))
    picks = [replicas.route("m").name for _ in range(2000)]  # type: ignore[union-attr]
    assert 0.2 < picks.count("a") / 2000 < 0.3  # weights 1:3
    assert replicas.route("other") is None and not replicas.ready_now("other")
    assert replicas.route("m", exclude=("b",)).name == "a"  # type: ignore[union-attr]
    # an older table is ignored; a newer one replaces it whole
    replicas.apply(RoutingTable(0))
    assert replicas.ready_now("m")
    replicas.apply(RoutingTable(2, (_entry("a"), _entry("b")), {"m": {"b": 1.0}}))
    assert {replicas.route("m").name for _ in range(50)} == {"b"}  # type: ignore[union-attr]


async def test_channels_are_kept_and_reopened_only_when_an_instance_changed() -> None:
    replicas, _ = _replicas()
    replicas.apply(RoutingTable(1, (_entry("a"), _entry("b"))))
    a, b = (replicas._replicas[n].upstream for n in "ab")
    replicas.apply(RoutingTable(2, (_entry("a"), _entry("b", epoch=1))))
    assert replicas._replicas["a"].upstream is a  # same address, same Triton: same channel
    assert replicas._replicas["b"].upstream is not b  # restarted: a fresh channel
    replicas.apply(RoutingTable(3, (_entry("a"),)))
    assert list(replicas._replicas) == ["a"]
    await replicas.close()


async def test_a_sequence_stays_where_it_started_while_that_triton_has_the_model() -> None:
    replicas, _ = _replicas()
    both = (_entry("a"), _entry("b"))
    replicas.apply(RoutingTable(1, both, {"s": {"a": 1.0, "b": 1.0}},
                                {"s": frozenset("ab")}, {"s": 60.0}))
    first = replicas.route("s", sequence=Sequence("7", True, False))
    assert first is not None
    other = "b" if first.name == "a" else "a"
    # its instance drains: no new requests, but the open sequence's steps still go there
    replicas.apply(RoutingTable(2, (_entry(first.name, routable=False), _entry(other)),
                                {"s": {other: 1.0}}, {"s": frozenset("ab")}, {"s": 60.0}))
    step = replicas.route("s", sequence=Sequence("7", False, False))
    assert step is not None and step.name == first.name
    assert replicas.sequences.count_open() == {(first.name, "s"): 1}
    assert replicas.route("s", sequence=Sequence("8", True, False)).name == other  # type: ignore[union-attr]
    end = replicas.route("s", sequence=Sequence("7", False, True))
    assert end is not None and end.name == first.name
    assert replicas.sequences.count_open() == {(other, "s"): 1}


async def test_retries_only_off_a_replica_being_removed_and_failures_are_told() -> None:
    replicas, link = _replicas()
    replicas.apply(RoutingTable(1, (_entry("a"), _entry("b")), {"m": {"a": 1.0, "b": 1.0}}))
    a = replicas._replicas["a"]
    assert not replicas.retry_on(a, "m", Status.NOT_FOUND, None)  # still listed: its answer
    assert replicas.retry_on(a, "m", Status.UNAVAILABLE, None)  # its Triton died
    assert not replicas.retry_on(a, "m", Status.INVALID_ARGUMENT, None)
    assert not replicas.retry_on(a, "m", Status.UNAVAILABLE, Sequence("1", False, False))
    replicas.apply(RoutingTable(2, (_entry("a"), _entry("b")), {"m": {"b": 1.0}}))
    assert replicas.retry_on(a, "m", Status.NOT_FOUND, None)  # removed meanwhile
    replicas.failed("a", "m", Status.UNAVAILABLE, "connection refused")
    replicas.failed("a", "m", Status.CANCELLED, "the client gave up")
    assert link.sent == [("failed", "a", "m", "UNAVAILABLE", "connection refused")]


async def test_a_miss_asks_the_control_process_and_raises_its_error() -> None:
    replicas, link = _replicas()
    await replicas.wait_ready("m", 2.5, exclude=("a",))
    assert link.asked == [("m", ("a",), 2.5)]
    link.error = ModelNotFound("nope")
    with pytest.raises(ModelNotFound):
        await replicas.wait_ready("nope", 1.0)


async def test_in_flight_counts_for_the_report() -> None:
    replicas, _ = _replicas()
    replicas.apply(RoutingTable(1, (_entry("a"), _entry("b")), {"m": {"a": 1.0}}))
    upstream = replicas._replicas["a"].upstream
    assert upstream is not None
    upstream.begin("m")
    upstream.begin("m")
    upstream.begin("n")
    upstream.end("n")
    assert replicas.in_flight() == {"a": {"m": 2}}
    assert isinstance(ControlLink, type)
    await replicas.close()
