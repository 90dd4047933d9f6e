"""The serving core's inference path against fakes of its two ports (no transport, no
fleet): admission, the deadline, the retry rule applied, what is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field

import pytest

from controlplane.errors import DeadlineExceeded, ModelNotFound
from controlplane.serving.facts import RequestFacts, Sequence
from controlplane.serving.path import InferencePath, UpstreamError
from controlplane.serving.ports import Replica
from controlplane.serving.status import Status
from controlplane.serving.upstream import Upstream
from controlplane.serving.versions import VersionSplit
from controlplane.tensors import TensorShape
from controlplane.traffic.observation import Observation


@dataclass(eq=False)
class FakeReplica:
    name: str
    outstanding: int = 0
    cordoned: bool = False
    live: bool = True
    ready: set[str] = field(default_factory=set)
    upstream: Upstream | None = None

    def __post_init__(self) -> None:
        self.upstream = Upstream(self.name, "127.0.0.1:1")  # never opened: counters only

    def serves(self, model: str) -> bool:
        return model in self.ready

    def weight(self, model: str) -> float:
        return 1.0


class FakeReplicas:
    """Routes to the first replica serving the model; a cold model is loaded on the first
    replica after ``load_s``; records what the path tells it."""

    def __init__(self, *replicas: FakeReplica, load_s: float = 0.0,
                 models: Collection[str] = ("m", "cold")) -> None:
        self.replicas = list(replicas)
        self.load_s = load_s
        self.models = set(models)
        self.failures: list[tuple[str, str, Status]] = []
        self.retry = True
        self.splits: dict[str, VersionSplit] = {}

    def route(self, model: str, exclude: Collection[str] = (),
              sequence: Sequence | None = None) -> Replica | None:
        return next((r for r in self.replicas if r.serves(model) and r.name not in exclude),
                    None)

    def ready_now(self, model: str) -> bool:
        return any(r.serves(model) for r in self.replicas)

    async def wait_ready(self, model: str, budget_s: float,
                         exclude: Collection[str] = ()) -> None:
        if model not in self.models:
            raise ModelNotFound(model)
        if self.load_s > budget_s:
            await asyncio.sleep(max(budget_s, 0))
            raise DeadlineExceeded(f"model '{model}' was not ready within the deadline")
        await asyncio.sleep(self.load_s)
        next(r for r in self.replicas if r.name not in exclude).ready.add(model)

    def retry_on(self, replica: Replica, model: str, status: Status,
                 sequence: Sequence | None) -> bool:
        return self.retry and status is Status.UNAVAILABLE

    def failed(self, instance: str, model: str, status: Status, message: str) -> None:
        self.failures.append((instance, model, status))

    def split(self, model: str) -> VersionSplit | None:
        return self.splits.get(model)

    def why_unavailable(self) -> str:
        return "none serves"


class Recorder:
    enabled = True

    def __init__(self) -> None:
        self.seen: list[Observation] = []

    def record(self, observation: Observation) -> None:
        self.seen.append(observation)

    def wants_payload(self, observation: Observation, size: int) -> bool:
        return False

    def wants_witness(self) -> bool:
        return True


def facts(model: str = "m") -> RequestFacts:
    return RequestFacts(model, "", "r1", (TensorShape("x", "FP32", (1, 4)),), ((10, 26),))


async def test_a_ready_replica_serves_at_once_and_the_outcome_is_recorded() -> None:
    a = FakeReplica("a", ready={"m"})
    recorder = Recorder()
    path = InferencePath(FakeReplicas(a), recorder)
    sent: list[str] = []

    async def send(rt: Replica, version: str | None) -> bytes:
        assert rt.upstream is not None and rt.upstream.in_flight("m") == 1  # counted
        sent.append(rt.name)
        return b"answer"

    assert await path.call(facts(), b"x" * 30, lambda: 5.0, send) == b"answer"
    assert sent == ["a"] and a.upstream is not None and a.upstream.in_flight("m") == 0
    (seen,) = recorder.seen
    assert (seen.model, seen.outcome, seen.cold, seen.wait_s) == ("m", "OK", False, None)
    assert seen.witness == (b"x" * 30, ((10, 26),))  # its bytes, for the value ranges


async def test_a_cold_model_waits_for_its_load_and_is_recorded_cold() -> None:
    recorder = Recorder()
    path = InferencePath(FakeReplicas(FakeReplica("a"), load_s=0.05), recorder)
    await path.call(facts("cold"), None, lambda: 5.0, lambda rt, v: asyncio.sleep(0, b"ok"))
    (seen,) = recorder.seen
    assert seen.cold and seen.wait_s is not None and seen.wait_s >= 0.04


async def test_past_the_deadline_and_unknown_models_fail_with_our_errors() -> None:
    recorder = Recorder()
    path = InferencePath(FakeReplicas(FakeReplica("a"), load_s=1.0), recorder)
    with pytest.raises(DeadlineExceeded):
        await path.call(facts("cold"), None, lambda: 0.05, lambda rt, v: asyncio.sleep(0, b""))
    with pytest.raises(ModelNotFound):
        await path.call(facts("nope"), None, lambda: 5.0, lambda rt, v: asyncio.sleep(0, b""))
    assert [(o.model, o.outcome) for o in recorder.seen] == [
        ("cold", "DEADLINE_EXCEEDED"), ("nope", "NOT_FOUND")]


async def test_an_unreachable_replica_is_retried_once_on_another() -> None:
    a, b = FakeReplica("a", ready={"m"}), FakeReplica("b", ready={"m"})
    replicas = FakeReplicas(a, b)
    recorder = Recorder()
    path = InferencePath(replicas, recorder)

    async def send(rt: Replica, version: str | None) -> bytes:
        if rt.name == "a":
            raise UpstreamError(Status.UNAVAILABLE, "connection refused")
        return b"from b"

    assert await path.call(facts(), None, lambda: 5.0, send) == b"from b"
    assert replicas.failures == [("a", "m", Status.UNAVAILABLE)]
    assert [o.outcome for o in recorder.seen] == ["OK"]

    async def both_fail(rt: Replica, version: str | None) -> bytes:
        raise UpstreamError(Status.UNAVAILABLE, f"{rt.name} is gone", rt.name)

    with pytest.raises(UpstreamError) as failed:  # once only: the second answer is the client's
        await path.call(facts(), None, lambda: 5.0, both_fail)
    assert failed.value.original == "b" and len(replicas.failures) == 3
    replicas.retry = False
    with pytest.raises(UpstreamError) as refused:
        await path.call(facts(), None, lambda: 5.0, both_fail)
    assert refused.value.original == "a"
    assert [o.outcome for o in recorder.seen] == ["OK", "UNAVAILABLE", "UNAVAILABLE"]


async def test_each_record_names_the_replica_that_answered_or_none() -> None:
    a, b = FakeReplica("a", ready={"m"}), FakeReplica("b", ready={"m"})
    recorder = Recorder()
    path = InferencePath(FakeReplicas(a, b), recorder)

    async def a_is_gone(rt: Replica, version: str | None) -> bytes:
        if rt.name == "a":
            raise UpstreamError(Status.UNAVAILABLE, "connection refused")
        return b"from b"

    async def refused(rt: Replica, version: str | None) -> bytes:
        raise UpstreamError(Status.INVALID_ARGUMENT, f"{rt.name}: bad input")

    await path.call(facts(), None, lambda: 5.0, lambda rt, v: asyncio.sleep(0, b"ok"))
    await path.call(facts(), None, lambda: 5.0, a_is_gone)  # retried: b answered
    with pytest.raises(UpstreamError):
        await path.call(facts(), None, lambda: 5.0, refused)
    with pytest.raises(ModelNotFound):  # no replica reached
        await path.call(facts("nope"), None, lambda: 5.0, lambda rt, v: asyncio.sleep(0, b""))
    assert [(o.outcome, o.instance) for o in recorder.seen] == [
        ("OK", "a"), ("OK", "b"), ("INVALID_ARGUMENT", "a"), ("NOT_FOUND", None)]


async def test_during_a_rollout_unversioned_requests_name_a_version_by_the_split() -> None:
    a = FakeReplica("a", ready={"m"})
    recorder = Recorder()
    replicas = FakeReplicas(a)
    path = InferencePath(replicas, recorder)
    named: list[str | None] = []

    async def send(rt: Replica, version: str | None) -> bytes:
        named.append(version)
        return b"ok"

    await path.call(facts(), None, lambda: 5.0, send)
    assert named == [None]  # no rollout: forwarded as it came
    replicas.splits["m"] = VersionSplit(active="1", target="2", share=0.25)
    named.clear()
    for _ in range(2000):
        await path.call(facts(), None, lambda: 5.0, send)
    assert set(named) == {"1", "2"}
    assert 0.2 < named.count("2") / len(named) < 0.3
    # the observation names the version that served it
    assert {o.version for o in recorder.seen[-2000:]} == {"1", "2"}
    # a request that names a version gets it, whatever the split
    named.clear()
    await path.call(facts()._replace(version="1"), None, lambda: 5.0, send)
    assert named == [None] and recorder.seen[-1].version == "1"
    replicas.splits["m"] = VersionSplit(active="1", target="2", share=0.0)
    named.clear()
    for _ in range(200):
        await path.call(facts(), None, lambda: 5.0, send)
    assert set(named) == {"1"}  # before any step: never the target
