"""Tensor shapes and datatypes as Triton and KServe v2 name them: one table, one signature.

A leaf module (numpy only): the gateway, traffic recording and warm-up all describe tensors
with these, so the shape-signature text stored with every request is written and parsed in
one place.

Datatypes: the KServe wire name (``FP32``, ``BF16``, ``BYTES``) is the key; config.pbtxt
says ``TYPE_<name>``, except ``BYTES`` which it calls ``TYPE_STRING``. Raw tensor bytes are
row-major little-endian; a BYTES element is a 4-byte little-endian length and its bytes.
numpy has no bfloat16: BF16 values travel as float32 arrays whose low 16 bits are dropped
(what tritonclient does), and raw BF16 bytes are read back as float32.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


@dataclass(frozen=True)
class Datatype:
    #: KServe v2 wire name
    name: str
    #: bytes per element; None for BYTES (length-prefixed elements)
    size: int | None
    #: little-endian numpy dtype of the raw bytes; BF16: uint16 bit patterns
    storage: np.dtype[Any]
    kind: str  # "bool", "int", "uint", "float", "bytes"

    @property
    def config_name(self) -> str:
        """The name config.pbtxt uses (``TYPE_FP32``; BYTES is ``TYPE_STRING``)."""
        return "TYPE_STRING" if self.name == "BYTES" else f"TYPE_{self.name}"

    @property
    def is_integer(self) -> bool:
        return self.kind in ("int", "uint")


def _dt(name: str, size: int | None, storage: str | type, kind: str) -> Datatype:
    return Datatype(name, size, np.dtype(storage), kind)


#: Every datatype Triton serves, by wire name.
DATATYPES: dict[str, Datatype] = {d.name: d for d in (
    _dt("BOOL", 1, np.bool_, "bool"),
    _dt("UINT8", 1, "<u1", "uint"), _dt("UINT16", 2, "<u2", "uint"),
    _dt("UINT32", 4, "<u4", "uint"), _dt("UINT64", 8, "<u8", "uint"),
    _dt("INT8", 1, "<i1", "int"), _dt("INT16", 2, "<i2", "int"),
    _dt("INT32", 4, "<i4", "int"), _dt("INT64", 8, "<i8", "int"),
    _dt("FP16", 2, "<f2", "float"), _dt("BF16", 2, "<u2", "float"),
    _dt("FP32", 4, "<f4", "float"), _dt("FP64", 8, "<f8", "float"),
    _dt("BYTES", None, object, "bytes"),
)}


def datatype(name: str) -> Datatype:
    """The entry for a wire name; ValueError naming the known ones otherwise."""
    try:
        return DATATYPES[name]
    except KeyError:
        raise ValueError(f"unknown datatype {name!r} (known: {', '.join(DATATYPES)})") from None


def wire_name(config_type: str) -> str:
    """``TYPE_FP32`` -> ``FP32``; ``TYPE_STRING`` -> ``BYTES``."""
    return "BYTES" if config_type == "TYPE_STRING" else config_type.removeprefix("TYPE_")


def config_name(wire: str) -> str:
    """``FP32`` -> ``TYPE_FP32``; ``BYTES`` -> ``TYPE_STRING``."""
    return "TYPE_STRING" if wire == "BYTES" else f"TYPE_{wire}"


class TensorShape(NamedTuple):
    """One input of one request: a NamedTuple, since the gateway makes one per input."""

    name: str
    #: KServe wire datatype
    datatype: str
    #: as the client sent it: batch dimension first when the model batches
    shape: tuple[int, ...]


def signature_of(inputs: Iterable[TensorShape]) -> str:
    """``name:DATATYPE:d0xd1`` per input, sorted by name, joined by ``,`` (batch dim
    included): clients may order inputs freely."""
    ordered = sorted(inputs, key=lambda i: i.name)
    return ",".join(f"{i.name}:{i.datatype}:{'x'.join(map(str, i.shape))}" for i in ordered)


def parse_signature(text: str) -> tuple[TensorShape, ...]:
    """Inverse of :func:`signature_of`; ValueError on malformed text."""
    shapes = []
    for part in text.split(","):
        try:
            name, dtype, dims = part.rsplit(":", 2)
            shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        except ValueError:
            raise ValueError(f"malformed shape signature part {part!r}") from None
        shapes.append(TensorShape(name, dtype, shape))
    return tuple(shapes)


def numel(dims: Sequence[int]) -> int:
    return math.prod(dims)


# -- BYTES ------------------------------------------------------------------------------------
_LENGTH = struct.Struct("<I")


def encode_bytes_elements(elements: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def decode_bytes_elements(data: bytes) -> list[bytes]:
    """The elements of a length-prefixed BYTES buffer; ValueError when it is malformed."""
    elements = []
    pos = 0
    while pos < len(data):
        if pos + _LENGTH.size > len(data):
            raise ValueError(f"truncated length prefix at byte {pos}")
        (length,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        if pos + length > len(data):
            raise ValueError(f"element at byte {pos} claims {length} bytes, "
                             f"{len(data) - pos} remain")
        elements.append(data[pos:pos + length])
        pos += length
    return elements


# -- BF16 -------------------------------------------------------------------------------------
def bf16_bytes(values: np.ndarray[Any, Any]) -> bytes:
    """float values as raw BF16: the high half of each float32 (truncation, as tritonclient)."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    return (bits >> 16).astype("<u2").tobytes()


def bf16_to_float32(data: bytes) -> np.ndarray[Any, Any]:
    """Raw BF16 bytes as float32 values (exact: BF16 is the high half of a float32)."""
    bits = np.frombuffer(data, dtype="<u2").astype("<u4") << 16
    return bits.view("<f4")


def array_from_bytes(name: str, dims: Sequence[int], data: bytes) -> np.ndarray[Any, Any]:
    """One tensor decoded from raw bytes, as tritonclient takes it for ``name`` (a writable
    copy): BYTES an object array of bytes, BF16 float32."""
    info = datatype(name)
    if info.kind == "bytes":
        elements = decode_bytes_elements(data)
        array = np.empty(len(elements), dtype=object)
        array[:] = elements
        return array.reshape(tuple(dims))
    if name == "BF16":
        return bf16_to_float32(data).reshape(tuple(dims)).copy()
    return np.frombuffer(data, dtype=info.storage).reshape(tuple(dims)).copy()


def zeros(name: str, shape: Sequence[int]) -> np.ndarray[Any, Any]:
    """Zeros as tritonclient takes them for ``name`` (BF16: float32; BYTES: empty strings)."""
    info = datatype(name)
    if info.kind == "bytes":
        return np.full(tuple(shape), b"", dtype=object)
    if name == "BF16":
        return np.zeros(tuple(shape), dtype=np.float32)
    return np.zeros(tuple(shape), dtype=info.storage)
