"""What warm-up generation takes and gives. Pure data: no I/O, no Triton, no database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from controlplane.tensors import TensorShape, config_name

__all__ = ["InputData", "PayloadSampleData", "ShapeCount", "TensorShape", "WarmupPlan",
           "WarmupSample", "WarmupSettings"]


@dataclass(frozen=True)
class ShapeCount:
    """One row of a model's shape histogram (recorded by the gateway)."""

    inputs: tuple[TensorShape, ...]
    count: int
    last_seen: float = 0.0


@dataclass(frozen=True)
class PayloadSampleData:
    """A real request kept by the gateway: raw row-major bytes per input."""

    inputs: Mapping[str, TensorShape]
    data: Mapping[str, bytes]


@dataclass(frozen=True)
class WarmupSettings:
    #: share of recorded requests the chosen shapes must cover
    coverage: float = 0.95
    #: share of executions the chosen batch sizes must cover (from Triton's batch_stats)
    batch_coverage: float = 0.95
    #: at most this many samples (shape x batch size) in one config
    max_samples: int = 12
    #: at most this many representative values per variable dimension
    max_buckets_per_dim: int = 4
    #: executions per sample: enough to get past first-execution effects
    count: int = 3
    #: cap on the total elements pushed through warm-up (samples x batch x count x numel)
    max_total_elements: int = 50_000_000
    #: length used for a variable dim when there is no traffic yet
    default_variable_length: int = 16
    seed: int = 0


@dataclass(frozen=True)
class InputData:
    """How one input of one sample is filled."""

    datatype: str
    #: dims without the batch dimension, all concrete
    dims: tuple[int, ...]
    source: Literal["zero", "file"]
    #: file name under ``warmup/`` in the model directory when source == "file"
    file: str | None = None


@dataclass(frozen=True)
class WarmupSample:
    name: str
    batch_size: int
    inputs: Mapping[str, InputData]
    count: int
    #: share of recorded requests this sample stands for (for explanations)
    share: float = 0.0


@dataclass(frozen=True)
class WarmupPlan:
    samples: tuple[WarmupSample, ...]
    #: ``warmup/<file>`` contents referenced by samples (raw row-major bytes)
    files: Mapping[str, bytes]
    #: share of recorded traffic covered by the samples' shapes (0 with no traffic)
    coverage: float
    #: True when built from the config alone (no traffic recorded yet)
    default: bool
    #: human-readable reasons for choices and omissions
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: the covered shapes as canonical signatures (drift detection compares against these)
    covered: frozenset[str] = field(default_factory=frozenset)

    def model_warmup(self) -> list[dict[str, Any]]:
        """The ``model_warmup`` list in Triton's JSON config form (proto field names)."""
        result = []
        for sample in self.samples:
            inputs = {}
            for name, data in sample.inputs.items():
                entry: dict[str, Any] = {
                    "data_type": config_name(data.datatype),
                    "dims": [str(d) for d in data.dims],
                }
                if data.source == "zero":
                    entry["zero_data"] = True
                else:
                    entry["input_data_file"] = data.file
                inputs[name] = entry
            result.append({"name": sample.name, "batch_size": sample.batch_size,
                           "inputs": inputs, "count": sample.count})
        return result
