"""What crosses the pipe between the control process and a gateway worker.

Messages are tuples whose first item names them, pickled with a 4-byte length in front (one
Unix socket pair per worker: both ends are our own processes). Control -> worker:
``("table", RoutingTable)``, ``("ready", id, error | None)`` (the answer to an ``ensure``),
``("stop",)``. Worker -> control: ``("hello", pid)`` once it listens, ``("ensure", id, model,
exclude, budget_s)`` (make a model ready within a budget: the lazy load), ``("failed",
instance, model, status, message)`` (a replica answered with an error), ``("report", ...)``
(:class:`Report`, every ``report_interval_s`` while anything changed). Errors travel as their
code and message (:func:`encode_error`).
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass, field
from typing import Any

from controlplane.errors import ControlPlaneError, ErrorCode
from controlplane.traffic.observation import Observation

_LENGTH = struct.Struct("!I")
#: a message's size at most (a report of observations with payload samples is the largest)
MAX_MESSAGE = 1 << 30


@dataclass(frozen=True)
class WorkerConfig:
    """All a worker needs to serve (settings are not re-read from the environment)."""

    index: int
    host: str
    grpc_port: int
    http_port: int | None
    #: the control process's own gateway (loopback), for the server-wide calls
    internal_grpc: str
    internal_http: str | None
    default_deadline_s: float
    #: a forwarded server-wide call's limit when the client set none (loads included)
    forward_timeout_s: float
    max_request_bytes: int
    max_buffered_bytes: int
    expose_tracebacks: bool
    recording: bool
    sampled_models: tuple[str, ...] = ()
    sample_per_shape: int = 4
    sample_max_bytes: int = 1 << 20
    sample_max_model_bytes: int = 16 << 20
    range_sample_every: int = 0
    #: how often the worker reports (in flight, sequences, observations), seconds
    report_interval_s: float = 0.05
    #: observations held between reports at most (more are dropped and counted)
    max_unreported: int = 20_000
    log_level: int = 20


@dataclass
class Report:
    """A worker's state, and the observations recorded since its last report."""

    #: the routing table version it routes by
    table_version: int
    #: instance -> model -> requests and streams in flight there now
    in_flight: dict[str, dict[str, int]] = field(default_factory=dict)
    #: (instance, model) -> open sequences
    sequences: dict[tuple[str, str], int] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    #: observations dropped (its buffer was full) since its last report
    dropped: int = 0
    #: requests served since start, and requests in flight (``/healthz``)
    served: int = 0


def write(writer: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(data)))
    writer.write(data)


async def read(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next message; raises asyncio.IncompleteReadError at the end of the pipe."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > MAX_MESSAGE:
        raise ValueError(f"gateway worker pipe: a {size}-byte message (at most {MAX_MESSAGE})")
    message = pickle.loads(await reader.readexactly(size))
    assert isinstance(message, tuple)
    return message


def encode_error(exc: ControlPlaneError) -> tuple[str, str]:
    return exc.code.name, exc.message


def decode_error(error: tuple[str, str]) -> ControlPlaneError:
    code, message = error
    return ControlPlaneError(message, code=ErrorCode[code])
