"""Valid warm-up data: what fills each input of a sample, and the probe requests that match it.

Warm-up that fails fails the load, so every value must be one the model accepts:

* never ``random_data`` (raw ``rand()`` bytes: NaN floats, ids far outside any embedding);
* integers only from a known valid range (configured, or observed in payload samples):
  never zeros or random values when the range is unknown;
* zeros wherever zeros are valid, because every ``input_data_file`` forces the whole model
  directory, weights included, to be re-sent with the load;
* integer ids outside a range that excludes 0: a seeded file of ids drawn in range;
* BYTES from real requests or the config's examples only: invented strings prove nothing;
* a recorded request of the warmed shape, when the gateway kept one, is used as it is.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from controlplane.errors import ConfigError
from controlplane.tensors import zeros
from controlplane.triton.repository import ModelSpec, TensorSpec
from controlplane.warmup.gen_shapes import ShapeKey, dims_fit, key_text
from controlplane.warmup.gen_tensors import (
    BYTES,
    FLOAT_TYPES,
    INTEGER_TYPES,
    NUMPY_DTYPES,
    encode_bytes_elements,
    first_element,
    integer_bounds,
    is_supported,
    numel,
    size_problem,
    tensor_from_bytes,
)
from controlplane.warmup.types import PayloadSampleData, WarmupPlan

#: where Triton reads ``input_data_file`` from, relative to the model directory
WARMUP_DIR = "warmup"
_SAFE_FILE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class InputFill:
    source: Literal["zero", "file"]
    content: bytes = b""
    #: where the values come from, for notes: zeros, payload, ids in range, config examples
    origin: str = "zeros"


@dataclass(frozen=True)
class ShapeFill:
    inputs: dict[str, InputFill]
    notes: tuple[str, ...] = ()


def _parse_range(text: str, where: str) -> tuple[int, int]:
    try:
        lo, hi = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(f"{where}: expected 'lo:hi' (half-open), got {text!r}") from None
    return lo, hi


def _resolve_range(
    tensor: TensorSpec, spec: ModelSpec, value_ranges: Mapping[str, tuple[int, int]],
) -> tuple[int, int] | None:
    """The half-open range of valid values for an integer input, clamped to its type."""
    if tensor.name in value_ranges:
        lo, hi = value_ranges[tensor.name]
    elif (text := spec.parameters.get(f"input_range.{tensor.name}")) is not None:
        lo, hi = _parse_range(text, f"{spec.name}: warmctl.input_range.{tensor.name}")
    else:
        return None
    low, high = integer_bounds(tensor.datatype)
    lo, hi = max(lo, low), min(hi, high)
    if lo >= hi:
        raise ConfigError(f"{spec.name}: input '{tensor.name}' has an empty valid range "
                          f"[{lo}, {hi}) for {tensor.datatype}")
    return lo, hi


def _examples(spec: ModelSpec, name: str) -> list[bytes] | None:
    text = spec.parameters.get(f"example.{name}")
    if text is None:
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{spec.name}: warmctl.example.{name} must be a non-empty JSON "
                          f"array of strings")
    return [v.encode() for v in values]


def _payload_problem(tensor: TensorSpec, dims: Sequence[int], data: bytes,
                     valid: tuple[int, int] | None) -> str | None:
    """Why one element of recorded payload would fail warm-up (None when it is fine)."""
    if tensor.datatype == "BF16":
        bits = np.frombuffer(data, dtype="<u2")
        return "non-finite values" if bool(np.any((bits & 0x7F80) == 0x7F80)) else None
    if tensor.datatype == BYTES:
        return None
    values = tensor_from_bytes(tensor.datatype, dims, data)
    if tensor.datatype in FLOAT_TYPES and not bool(np.all(np.isfinite(values))):
        return "non-finite values"
    if valid is not None and values.size and (
            int(values.min()) < valid[0] or int(values.max()) >= valid[1]):
        return f"values outside [{valid[0]}, {valid[1]})"
    return None


class InputFiller:
    """Chooses the data of every input for a concrete shape; see the module docstring."""

    def __init__(self, spec: ModelSpec, *, value_ranges: Mapping[str, tuple[int, int]],
                 samples: Sequence[PayloadSampleData], seed: int) -> None:
        self.spec = spec
        self.samples = samples
        self.seed = seed
        self.ranges = {t.name: _resolve_range(t, spec, value_ranges)
                       for t in spec.inputs if t.datatype in INTEGER_TYPES}
        self.examples = {t.name: _examples(spec, t.name)
                         for t in spec.inputs if t.datatype == BYTES}

    def _payloads(self, key: ShapeKey) -> list[PayloadSampleData]:
        """Recorded requests whose non-batch dims are exactly ``key``, in the order given."""
        batching = self.spec.max_batch_size > 0
        return [
            sample for sample in self.samples
            if all(
                t.name not in sample.inputs if dims is None else (
                    (shape := sample.inputs.get(t.name)) is not None
                    and t.name in sample.data and shape.datatype == t.datatype
                    and (len(shape.shape) > 0 or not batching)
                    and tuple(shape.shape[1:] if batching else shape.shape) == dims)
                for t, dims in zip(self.spec.inputs, key, strict=True))
        ]

    def _from_payload(self, sample: PayloadSampleData,
                      key: ShapeKey) -> dict[str, InputFill] | str:
        """Batch element 0 of a recorded request, input by input, or why it would fail."""
        inputs: dict[str, InputFill] = {}
        for tensor, dims in zip(self.spec.inputs, key, strict=True):
            if dims is None:
                continue
            shape = sample.inputs[tensor.name].shape
            batch = shape[0] if self.spec.max_batch_size > 0 else 1
            try:
                content = first_element(tensor.datatype, batch, dims, sample.data[tensor.name])
                problem = _payload_problem(tensor, dims, content, self.ranges.get(tensor.name))
            except ValueError as exc:
                problem = str(exc)
            if problem is not None:
                return f"'{tensor.name}': {problem}"
            inputs[tensor.name] = InputFill("file", content, "recorded payload")
        return inputs

    def _synthetic(self, tensor: TensorSpec, dims: Sequence[int]) -> InputFill | str:
        if tensor.datatype in INTEGER_TYPES:
            valid = self.ranges[tensor.name]
            if valid is None:
                # zeros or random ids may be invalid (an embedding with 1-based ids): a
                # warm-up that fails can fail the load and crash Triton
                return (f"integer input '{tensor.name}' has no known valid range: set "
                        f"warmctl.input_range.{tensor.name} in the config, or let the gateway "
                        f"keep payload samples (models.<name>.sample_payloads)")
            if valid[0] <= 0 < valid[1]:
                return InputFill("zero")
            rng = np.random.default_rng([self.seed, zlib.crc32(tensor.name.encode()), *dims])
            # Drawn as 64-bit, then narrowed: exact, since the range was clamped to the type.
            wide = np.uint64 if tensor.datatype.startswith("U") else np.int64
            ids = rng.integers(valid[0], valid[1], size=numel(dims), dtype=wide)
            return InputFill("file", ids.astype(NUMPY_DTYPES[tensor.datatype]).tobytes(),
                             f"ids drawn uniformly in [{valid[0]}, {valid[1]}), which excludes 0")
        if tensor.datatype == BYTES:
            examples = self.examples[tensor.name]
            if examples is None:
                return (f"BYTES input '{tensor.name}' has no recorded payload of dims "
                        f"{list(dims)} and no warmctl.example.{tensor.name} in the config")
            cycled = [examples[i % len(examples)] for i in range(numel(dims))]
            return InputFill("file", encode_bytes_elements(cycled), "config examples")
        if not is_supported(tensor.datatype):
            return f"input '{tensor.name}' has unsupported datatype {tensor.datatype}"
        return InputFill("zero")  # floats and BOOL: zero is finite and valid

    def fill(self, key: ShapeKey) -> ShapeFill | str:
        """Data for every input of ``key``, or why this shape cannot be warmed.

        A recorded request is used whole or not at all: mixing its inputs with made-up ones
        would warm a request nobody sent.
        """
        rejected: list[str] = []
        for sample in self._payloads(key):
            real = self._from_payload(sample, key)
            if not isinstance(real, str):
                return ShapeFill(real)
            rejected.append(real)
        notes: tuple[str, ...] = ()
        if rejected:
            notes = (f"{len(rejected)} recorded payload(s) of shape {key_text(key)} "
                     f"not used, e.g. {rejected[0]}",)
        inputs: dict[str, InputFill] = {}
        for tensor, dims in zip(self.spec.inputs, key, strict=True):
            if dims is None:
                continue
            fill = self._synthetic(tensor, dims)
            if isinstance(fill, str):
                return fill
            inputs[tensor.name] = fill
        return ShapeFill(inputs, notes)


def validate_plan(plan: WarmupPlan, spec: ModelSpec) -> None:
    """ValueError listing every way ``plan`` would not load as Triton warm-up for ``spec``."""
    problems: list[str] = []
    names = [s.name for s in plan.samples]
    if len(set(names)) != len(names):
        problems.append(f"duplicate sample names {names}")
    referenced: set[str] = set()
    expected = {t.name: t for t in spec.inputs}
    for sample in plan.samples:
        top = spec.max_batch_size if spec.max_batch_size > 0 else 1
        if not 1 <= sample.batch_size <= top:
            problems.append(f"{sample.name}: batch_size {sample.batch_size} outside 1..{top}")
        required = {n for n, t in expected.items() if not t.optional}
        if not required <= set(sample.inputs) <= set(expected):
            problems.append(f"{sample.name}: inputs {sorted(sample.inputs)} differ from the "
                            f"config's {sorted(expected)}")
            continue
        for name, data in sample.inputs.items():
            config_dims = expected[name].dims
            where = f"{sample.name}.{name}"
            if data.datatype != expected[name].datatype:
                problems.append(f"{where}: {data.datatype}, config says "
                                f"{expected[name].datatype}")
            if not dims_fit(data.dims, config_dims):
                problems.append(f"{where}: dims {list(data.dims)} do not fit the config's "
                                f"{list(config_dims)}")
                continue
            if data.source == "file":
                path = f"{WARMUP_DIR}/{data.file}"
                referenced.add(path)
                if not data.file or not _SAFE_FILE.match(data.file):
                    problems.append(f"{where}: unsafe file name {data.file!r}")
                elif path not in plan.files:
                    problems.append(f"{where}: {path} missing from the plan's files")
                elif (problem := size_problem(data.datatype, data.dims,
                                              plan.files[path])) is not None:
                    problems.append(f"{where}: {path}: {problem}")
    if unused := sorted(set(plan.files) - referenced):
        problems.append(f"files no sample reads: {unused}")
    if problems:
        raise ValueError(f"invalid warm-up plan for '{spec.name}': " + "; ".join(problems))


def probe_inputs(plan: WarmupPlan, spec: ModelSpec) -> list[dict[str, np.ndarray[Any, Any]]]:
    """Per sample, the arrays of ONE request carrying the sample's whole batch.

    Shape ``(batch_size, *dims)`` for batching models, ``dims`` for max_batch_size 0; filled
    like the sample (zeros, or the file's one batch element repeated), so probes after the load
    hit exactly the shapes the warm-up ran. BYTES become object arrays of ``bytes``.
    """
    requests = []
    for sample in plan.samples:
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        for name, data in sample.inputs.items():
            if data.source == "file":
                one = tensor_from_bytes(data.datatype, data.dims,
                                        plan.files[f"{WARMUP_DIR}/{data.file}"])
            elif data.datatype in NUMPY_DTYPES and data.datatype != BYTES:
                one = zeros(data.datatype, data.dims)
            else:
                raise ValueError(f"{sample.name}.{name}: no probe data for {data.datatype}")
            if spec.max_batch_size > 0:
                one = np.repeat(one[np.newaxis], sample.batch_size, axis=0)
            arrays[name] = one
        requests.append(arrays)
    return requests
