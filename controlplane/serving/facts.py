"""What the serving core knows of a request, whatever the transport it came by.

A front door fills these from its own wire form (``gateway/wire.py`` reads a serialized
ModelInferRequest without parsing its tensors; the HTTP door reads the JSON header) and the
core routes and records by them alone.
"""

from __future__ import annotations

from typing import NamedTuple

from controlplane.tensors import TensorShape


class Sequence(NamedTuple):
    """A request's sequence controls: the correlation id (an int64 or uint64 as its decimal
    text, or the string id), and its START and END flags."""

    id: str
    start: bool
    end: bool


class RequestFacts(NamedTuple):
    model: str
    #: "" for the model's version policy to decide
    version: str
    #: the client's request id ("" when none)
    id: str
    #: each input's name, datatype and shape
    inputs: tuple[TensorShape, ...]
    #: (start, end) of each input's raw bytes in the request as received, in input order
    #: (empty when the tensors came as JSON)
    raw_spans: tuple[tuple[int, int], ...]
    #: the sequence controls, when the request names a correlation id other than 0
    sequence: Sequence | None = None
