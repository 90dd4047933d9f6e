"""Client loops that send requests through a control plane's gateway while a test changes the
fleet behind it (an instance joins or leaves, a Triton is killed, a version rolls out), with
every answer kept: when it came, whether it was right, which model version computed it.

Each loop is a ``tritonclient.grpc.aio`` client of its own, as separate programs would be; a
:class:`Request` says what the ``i``-th request of loop ``k`` sends and how its answer is
checked, for the identity test models (:data:`IDENTITY`) and for the versioned model of
:mod:`tests.support.versions` (:data:`VERSIONED`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol, Self

import tritonclient.grpc.aio as grpc_aio
from tritonclient.grpc import InferInput, InferResult
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from tests.support.gateway import identity_input

#: a connection per loop: gRPC shares one between channels to the same target otherwise,
#: and the loops would reach the gateway as one client. (Giving any channel arguments also
#: drops tritonclient's defaults: keepalive pings and its message size limits.)
OWN_CONNECTION: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class Answer:
    #: ``time.monotonic()`` when the answer came
    at: float
    #: ``"ok"``, ``"wrong"`` (answered, with the wrong value), or the gRPC status and its
    #: message (``"StatusCode.UNAVAILABLE: ..."``)
    outcome: str
    #: the version that computed it, for a model that says (None: it does not, or failed)
    version: float | None = None


class Request(Protocol):
    """What the ``i``-th request (from 1) of loop ``loop`` (from 0) sends, and its check."""

    def inputs(self, loop: int, i: int) -> list[InferInput]: ...

    def check(self, loop: int, i: int, result: InferResult) -> tuple[bool, float | None]:
        """Whether ``result`` is the right answer, and the version that computed it."""
        ...


@dataclass(frozen=True)
class IdentityRequests:
    """The identity models (``OUTPUT0`` = ``INPUT0``): loop ``k`` sends ``k * 100_000 + i``,
    so that no two requests of a run send the same value and a crossed answer shows."""

    def value(self, loop: int, i: int) -> float:
        return float(loop * 100_000 + i)

    def inputs(self, loop: int, i: int) -> list[InferInput]:
        return identity_input([[self.value(loop, i)]])

    def check(self, loop: int, i: int, result: InferResult) -> tuple[bool, float | None]:
        out = result.as_numpy("OUTPUT0")
        return out is not None and float(out[0][0]) == self.value(loop, i), None


@dataclass(frozen=True)
class VersionedRequests:
    """The versioned model (``OUTPUT0`` = 2 x ``INPUT0``, ``VERSION``): inputs 1..9 in turn,
    loop ``k`` from ``k * 1000`` on, so that the ``errors`` kind (fails above 5) is met."""

    def value(self, loop: int, i: int) -> float:
        return float((loop * 1000 + i) % 9 + 1)

    def inputs(self, loop: int, i: int) -> list[InferInput]:
        return identity_input([[self.value(loop, i)]])

    def check(self, loop: int, i: int, result: InferResult) -> tuple[bool, float | None]:
        y, v = result.as_numpy("OUTPUT0"), result.as_numpy("VERSION")
        ok = y is not None and float(y[0][0]) == 2 * self.value(loop, i)
        return ok, None if v is None else float(v[0][0])


IDENTITY = IdentityRequests()
VERSIONED = VersionedRequests()


class ClientLoops:
    """``n`` client loops sending ``request``s to ``model`` through a gateway (a control
    plane's, or ``host:port``) from :meth:`start` to :meth:`finish`, ``pause_s`` apart."""

    def __init__(self, gateway: ControlPlane | str, model: str, *, n: int = 3,
                 pause_s: float = 0.005, request: Request = IDENTITY,
                 channel_args: list[tuple[str, Any]] | None = OWN_CONNECTION) -> None:
        url = gateway if isinstance(gateway, str) else gateway.gateway_url
        assert url is not None, "the control plane's gateway is off"
        self.url, self.model, self.n, self.pause_s = url, model, n, pause_s
        self.request, self.channel_args = request, channel_args
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self, loop: int) -> None:
        async with grpc_aio.InferenceServerClient(
                self.url, channel_args=self.channel_args) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                try:
                    result = await client.infer(self.model, self.request.inputs(loop, i),
                                                client_timeout=30)
                    ok, version = self.request.check(loop, i, result)
                    self.answers.append(Answer(time.monotonic(), "ok" if ok else "wrong",
                                               version))
                except InferenceServerException as exc:
                    self.answers.append(Answer(time.monotonic(),
                                               f"{exc.status()}: {exc.message()}"))
                await asyncio.sleep(self.pause_s)

    def start(self) -> Self:
        self._tasks = [asyncio.create_task(self._loop(k)) for k in range(self.n)]
        return self

    async def finish(self) -> list[Answer]:
        """Stops the loops (each after its request in flight); the answers that were not ok."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.failed()

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.outcome != "ok"]
