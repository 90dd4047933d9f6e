"""Tensor bytes as Triton reads them: element sizes, numpy dtypes, the BYTES wire format.

Warm-up data files and the gateway's payload samples both hold raw row-major, little-endian
bytes; BYTES (``TYPE_STRING``) tensors hold each element as a 4-byte little-endian length
followed by its bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

#: KServe datatype -> bytes per element (BYTES has none: its elements are length-prefixed)
ELEMENT_BYTES: dict[str, int] = {
    "BOOL": 1, "UINT8": 1, "INT8": 1,
    "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
    "UINT32": 4, "INT32": 4, "FP32": 4,
    "UINT64": 8, "INT64": 8, "FP64": 8,
}
INTEGER_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64",
                           "INT8", "INT16", "INT32", "INT64"})
FLOAT_TYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})
BYTES = "BYTES"

# Explicit little-endian: Triton's wire format, whatever machine builds the files.
# BF16 is missing on purpose: numpy has no such type.
NUMPY_DTYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_LENGTH = struct.Struct("<I")


def numel(dims: Sequence[int]) -> int:
    return math.prod(dims)


def integer_bounds(datatype: str) -> tuple[int, int]:
    """The half-open range an integer datatype can hold."""
    bits = 8 * ELEMENT_BYTES[datatype]
    if datatype.startswith("U"):
        return 0, 2 ** bits
    return -(2 ** (bits - 1)), 2 ** (bits - 1)


def is_supported(datatype: str) -> bool:
    return datatype in ELEMENT_BYTES or datatype == BYTES


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


def size_problem(datatype: str, dims: Sequence[int], data: bytes) -> str | None:
    """Why ``data`` is not exactly one tensor of ``dims`` (None when it is)."""
    count = numel(dims)
    if datatype == BYTES:
        try:
            elements = decode_bytes_elements(data)
        except ValueError as exc:
            return f"malformed BYTES data: {exc}"
        if len(elements) != count:
            return f"{len(elements)} BYTES elements, dims {list(dims)} need {count}"
        return None
    expected = count * ELEMENT_BYTES[datatype]
    if len(data) != expected:
        return f"{len(data)} bytes, dims {list(dims)} of {datatype} need {expected}"
    return None


def first_element(datatype: str, batch: int, dims: Sequence[int], data: bytes) -> bytes:
    """Bytes of batch element 0 from a whole batch of ``batch`` x ``dims`` (row-major)."""
    count = numel(dims)
    if datatype == BYTES:
        elements = decode_bytes_elements(data)
        if len(elements) != batch * count:
            raise ValueError(f"{len(elements)} BYTES elements, expected {batch * count}")
        return encode_bytes_elements(elements[:count])
    size = ELEMENT_BYTES[datatype]
    if len(data) != batch * count * size:
        raise ValueError(f"{len(data)} bytes, expected {batch * count * size}")
    return data[:count * size]


def tensor_from_bytes(datatype: str, dims: Sequence[int], data: bytes) -> np.ndarray[Any, Any]:
    """One tensor of ``dims`` decoded from its raw bytes (a writable copy)."""
    if datatype == BYTES:
        elements = decode_bytes_elements(data)
        array = np.empty(len(elements), dtype=object)
        array[:] = elements
        return array.reshape(tuple(dims))
    if datatype not in NUMPY_DTYPES:
        raise ValueError(f"no numpy dtype for {datatype}")
    return np.frombuffer(data, dtype=NUMPY_DTYPES[datatype]).reshape(tuple(dims)).copy()
