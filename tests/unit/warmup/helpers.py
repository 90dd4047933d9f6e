"""Small builders for warm-up generation tests: model specs, histogram rows, payload samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from controlplane.triton.repository import (
    ModelRepository,
    ModelSpec,
    parse_config,
    spec_from_config,
)
from controlplane.warmup.gen_tensors import encode_bytes_elements
from controlplane.warmup.types import PayloadSampleData, ShapeCount, TensorShape
from tests.support.repository import EXAMPLES

Tensor = tuple[str, str, Sequence[int]]


def make_spec(
    inputs: Sequence[Tensor],
    *,
    max_batch_size: int = 8,
    parameters: Mapping[str, str] | None = None,
    dynamic_batching: bool = True,
    preferred: Sequence[int] = (),
) -> ModelSpec:
    """A spec parsed from a generated config.pbtxt, as the repository would give it."""
    lines = ['name: "m"', 'backend: "torchscript"', f"max_batch_size: {max_batch_size}"]
    for name, datatype, dims in inputs:
        config_type = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
        lines.append(f'input {{ name: "{name}" data_type: {config_type} '
                     f"dims: [ {', '.join(map(str, dims))} ] }}")
    lines.append('output { name: "y" data_type: TYPE_FP32 dims: [ 1 ] }')
    if dynamic_batching:
        sizes = f"preferred_batch_size: [ {', '.join(map(str, preferred))} ]" if preferred else ""
        lines.append(f"dynamic_batching {{ {sizes} }}")
    for key, value in (parameters or {}).items():
        escaped = value.replace('"', '\\"')
        lines.append(f'parameters {{ key: "warmctl.{key}" '
                     f'value: {{ string_value: "{escaped}" }} }}')
    return spec_from_config("m", parse_config("\n".join(lines)))


def example_spec(name: str) -> ModelSpec:
    return ModelRepository(EXAMPLES).spec(name)


def row(count: int, *tensors: Tensor) -> ShapeCount:
    return ShapeCount(tuple(TensorShape(n, d, tuple(s)) for n, d, s in tensors), count)


def payload(**arrays: np.ndarray[Any, Any]) -> PayloadSampleData:
    """A recorded request from numpy arrays (object arrays of bytes become BYTES)."""
    inputs, data = {}, {}
    for name, array in arrays.items():
        if array.dtype == object:
            datatype, raw = "BYTES", encode_bytes_elements(list(array.reshape(-1)))
        else:
            datatype = {"int64": "INT64", "int32": "INT32", "float32": "FP32"}[array.dtype.name]
            raw = array.tobytes()
        inputs[name] = TensorShape(name, datatype, tuple(array.shape))
        data[name] = raw
    return PayloadSampleData(inputs, data)
