"""What the gateway notes about one request, and the shape signature derived from it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from controlplane.tensors import TensorShape as InputHeader
from controlplane.tensors import signature_of as signature_text

OK = "OK"


class Observation(NamedTuple):
    model: str
    version: str
    inputs: tuple[InputHeader, ...]
    #: unix seconds
    arrived_at: float
    #: None when unknown (a streamed request without id)
    latency_s: float | None
    #: OK or the gRPC status name
    outcome: str
    #: the model was not ready on arrival
    cold: bool
    #: time spent waiting for the model to become ready
    wait_s: float | None
    #: (raw request bytes, spans of the raw inputs) when the sampler asked for this payload
    payload: tuple[bytes, tuple[tuple[int, int], ...]] | None = None
    #: the same, for one request in ``traffic.range_sample_every``: read at flush time for the
    #: value ranges of integer inputs, then dropped (never stored)
    witness: tuple[bytes, tuple[tuple[int, int], ...]] | None = None
    #: the instance whose replica gave the answer recorded (after a retry: the second one);
    #: None when no replica was reached (admission failed). Per-replica feeds (the traffic
    #: ramp, ``fleet/ramp.py``) read it; the store does not keep it
    instance: str | None = None


class Signature(NamedTuple):
    text: str
    inputs: list[dict[str, Any]]
    #: the first dim when every input shares it
    batch_size: int | None


@lru_cache(maxsize=4096)
def signature_of(inputs: tuple[InputHeader, ...]) -> Signature:
    """Inputs sorted by name as ``name:DATATYPE:d0xd1``; clients may order inputs freely."""
    ordered = sorted(inputs, key=lambda i: i.name)
    text = signature_text(ordered)
    firsts = {i.shape[0] if i.shape else None for i in ordered}
    batch = firsts.pop() if len(firsts) == 1 else None
    return Signature(
        text,
        [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in ordered],
        batch,
    )
