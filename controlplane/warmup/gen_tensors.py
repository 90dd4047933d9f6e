"""Tensor bytes as Triton reads them for warm-up, on top of :mod:`controlplane.tensors`.

Warm-up data files and the gateway's payload samples both hold raw row-major, little-endian
bytes; BYTES (``TYPE_STRING``) tensors hold each element as a 4-byte little-endian length
followed by its bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from controlplane.tensors import (
    DATATYPES,
    array_from_bytes,
    decode_bytes_elements,
    encode_bytes_elements,
    numel,
)

__all__ = ["BYTES", "ELEMENT_BYTES", "FLOAT_TYPES", "INTEGER_TYPES", "NUMPY_DTYPES",
           "decode_bytes_elements", "encode_bytes_elements", "first_element", "integer_bounds",
           "is_supported", "numel", "size_problem", "tensor_from_bytes"]

#: KServe datatype -> bytes per element (BYTES has none: its elements are length-prefixed)
ELEMENT_BYTES: dict[str, int] = {n: d.size for n, d in DATATYPES.items() if d.size is not None}
INTEGER_TYPES = frozenset(n for n, d in DATATYPES.items() if d.is_integer)
FLOAT_TYPES = frozenset(n for n, d in DATATYPES.items() if d.kind == "float")
BYTES = "BYTES"

#: storage dtype of the raw bytes (BF16: its uint16 bit patterns)
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {n: d.storage for n, d in DATATYPES.items()}


def integer_bounds(datatype: str) -> tuple[int, int]:
    """The half-open range an integer datatype can hold."""
    bits = 8 * ELEMENT_BYTES[datatype]
    if datatype.startswith("U"):
        return 0, 2 ** bits
    return -(2 ** (bits - 1)), 2 ** (bits - 1)


def is_supported(datatype: str) -> bool:
    return datatype in DATATYPES


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
    """One tensor of ``dims`` decoded from its raw bytes (a writable copy), as tritonclient
    takes it: BYTES an object array of bytes, BF16 float32. ValueError for an unknown type."""
    return array_from_bytes(datatype, dims, data)
