"""The pipe between the control process and a worker: framed messages, errors with their
status, a worker's lazy load answered or failed when the control process is gone, and
observations bounded and counted between reports."""

from __future__ import annotations

import asyncio
import socket

import pytest

from controlplane.errors import DeadlineExceeded, ErrorCode, ModelNotFound
from controlplane.gateway.workers import protocol
from controlplane.gateway.workers.link import ControlLink, WorkerObservations
from controlplane.gateway.workers.protocol import Report, WorkerConfig
from controlplane.serving.status import Status
from controlplane.serving.table import RoutingTable
from controlplane.tensors import TensorShape
from controlplane.traffic.observation import Observation


async def _pipe() -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                           asyncio.StreamReader, asyncio.StreamWriter]:
    left, right = socket.socketpair()
    r1, w1 = await asyncio.open_unix_connection(sock=left)
    r2, w2 = await asyncio.open_unix_connection(sock=right)
    return r1, w1, r2, w2


def _config(**overrides: object) -> WorkerConfig:
    values: dict[str, object] = dict(
        index=0, host="127.0.0.1", grpc_port=1, http_port=None, internal_grpc="x:1",
        internal_http=None, default_deadline_s=10.0, forward_timeout_s=10.0,
        max_request_bytes=1 << 20, max_buffered_bytes=1 << 20, expose_tracebacks=False,
        recording=True)
    values.update(overrides)
    return WorkerConfig(**values)  # type: ignore[arg-type]


async def test_messages_cross_the_pipe_whole_and_in_order() -> None:
    _r1, w1, r2, w2 = await _pipe()
    big = b"x" * (3 << 20)
    protocol.write(w1, ("table", RoutingTable(3, serving={"m": {"a": 1.0}})))
    protocol.write(w1, ("report", Report(3, observations=[], dropped=2, served=big.count(b"x"))))
    first, second = await protocol.read(r2), await protocol.read(r2)
    assert first[0] == "table" and first[1].serving == {"m": {"a": 1.0}}
    assert second[1].served == 3 << 20 and second[1].dropped == 2
    w1.close()
    with pytest.raises(asyncio.IncompleteReadError):
        await protocol.read(r2)
    w2.close()


async def test_an_error_keeps_its_status_and_message() -> None:
    error = protocol.decode_error(protocol.encode_error(ModelNotFound("nope")))
    assert error.code is ErrorCode.NOT_FOUND and Status.of(error) is Status.NOT_FOUND
    assert error.message == "Request for unknown model: 'nope' is not found"


async def test_a_lazy_load_is_answered_or_failed_when_the_control_process_is_gone() -> None:
    _r1, w1, r2, w2 = await _pipe()
    link = ControlLink(w1)
    asked = asyncio.create_task(link.ensure("m", ("a",), 5.0))
    message = await protocol.read(r2)
    assert message[0] == "ensure" and message[2:] == ("m", ("a",), 5.0)
    link.answered(message[1], protocol.encode_error(DeadlineExceeded("not ready in 5s")))
    with pytest.raises(Exception) as failed:
        await asyncio.wait_for(asyncio.shield(asked), 1.0)
    assert Status.of(failed.value) is Status.DEADLINE_EXCEEDED  # type: ignore[arg-type]

    waiting = asyncio.create_task(link.ensure("m", (), 5.0))
    await protocol.read(r2)
    link.lost()
    with pytest.raises(Exception) as lost:
        await asyncio.wait_for(waiting, 1.0)
    assert "lost its control process" in str(lost.value)
    assert Status.of(lost.value) is Status.UNAVAILABLE  # type: ignore[arg-type]
    with pytest.raises(Exception, match="lost its control process"):
        await link.ensure("m", (), 5.0)  # at once, no message
    w1.close()
    w2.close()


async def test_observations_are_bounded_between_reports_and_counted() -> None:
    observations = WorkerObservations(_config(max_unreported=3, range_sample_every=2))
    shape = (TensorShape("INPUT0", "FP32", (1, 2)),)
    for i in range(5):
        observations.record(Observation("m", "", shape, float(i), 0.001, "OK", False, None))
    report = Report(1)
    observations.take(report)
    assert [o.arrived_at for o in report.observations] == [0.0, 1.0, 2.0]
    assert report.dropped == 2 and report.served == 5
    assert observations.pending == [] and observations.dropped == 0
    assert [observations.wants_witness() for _ in range(4)] == [False, True, False, True]
    assert not observations.wants_payload(report.observations[0], 10)  # none opted in


async def test_an_observation_keeps_the_instance_that_served_it_across_the_pipe() -> None:
    """The control process attributes a worker's requests to replicas (the traffic ramp)."""
    _r1, w1, r2, w2 = await _pipe()
    observations = WorkerObservations(_config())
    shape = (TensorShape("INPUT0", "FP32", (1, 2)),)
    observations.record(Observation("m", "", shape, 1.0, 0.002, "OK", False, None,
                                    instance="b"))
    observations.record(Observation("m", "", shape, 2.0, 0.5, "UNAVAILABLE", True, 0.4))
    report = Report(7)
    observations.take(report)
    protocol.write(w1, ("report", report))
    kind, received = await protocol.read(r2)
    assert kind == "report"
    assert [(o.arrived_at, o.outcome, o.instance) for o in received.observations] == [
        (1.0, "OK", "b"), (2.0, "UNAVAILABLE", None)]
    assert received.observations[0] == report.observations[0]  # every field, whole
    w1.close()
    w2.close()
