"""The model repository on disk: which models exist and what their config.pbtxt says.

Configs are parsed with Triton's own ModelConfig proto (shipped in tritonclient), so a config
we accept is one Triton accepts, and the JSON we send as a ``config`` override uses the proto
field names Triton's strict parser expects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from controlplane.errors import ConfigError, ModelNotFound
from controlplane.types import ModelConfigJson, ModelFiles, ModelName

#: prefix of config parameters addressed to warmctl (e.g. ``warmctl.input_range.<input>``)
PARAMETER_PREFIX = "warmctl."


@dataclass(frozen=True)
class TensorSpec:
    name: str
    #: Triton's config type, e.g. ``TYPE_FP32``
    data_type: str
    #: dims without the batch dimension; -1 marks a variable dim
    dims: tuple[int, ...]

    @property
    def datatype(self) -> str:
        """The KServe v2 wire datatype (``FP32``, ``INT64``, ``BYTES``)."""
        return "BYTES" if self.data_type == "TYPE_STRING" else self.data_type.removeprefix("TYPE_")


@dataclass(frozen=True)
class ModelSpec:
    """What the control plane needs to know of a model's configuration."""

    name: ModelName
    backend: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: ``KIND_CPU``, ``KIND_GPU`` or ``KIND_AUTO`` of the first instance group
    instance_kind: str
    instance_count: int
    dynamic_batching: bool
    preferred_batch_sizes: tuple[int, ...]
    #: ``warmctl.*`` parameters, prefix removed
    parameters: dict[str, str]
    #: the whole config in Triton's JSON form, for ``config`` overrides
    config: ModelConfigJson

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def parse_config(text: str, *, source: str = "config.pbtxt") -> model_config_pb2.ModelConfig:
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def config_to_json(config: model_config_pb2.ModelConfig) -> ModelConfigJson:
    as_json: ModelConfigJson = json_format.MessageToDict(
        config, preserving_proto_field_name=True)
    return as_json


def json_to_pbtxt(config: ModelConfigJson) -> str:
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return str(text_format.MessageToString(message))


def spec_from_config(name: ModelName, config: model_config_pb2.ModelConfig) -> ModelSpec:
    def tensors(items: object) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                name=t.name,
                data_type=model_config_pb2.DataType.Name(t.data_type),
                dims=tuple(int(d) for d in t.dims),
            )
            for t in items  # type: ignore[attr-defined]
        )

    groups = list(config.instance_group)
    kind = model_config_pb2.ModelInstanceGroup.Kind.Name(groups[0].kind) if groups else "KIND_AUTO"
    parameters = {
        key.removeprefix(PARAMETER_PREFIX): value.string_value
        for key, value in config.parameters.items()
        if key.startswith(PARAMETER_PREFIX)
    }
    return ModelSpec(
        name=name,
        backend=config.backend or config.platform,
        max_batch_size=int(config.max_batch_size),
        inputs=tensors(config.input),
        outputs=tensors(config.output),
        instance_kind=kind,
        instance_count=sum(max(1, g.count) for g in groups) if groups else 1,
        dynamic_batching=config.HasField("dynamic_batching"),
        preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
        parameters=parameters,
        config=config_to_json(config),
    )


class ModelRepository:
    """A local model repository: ``<root>/<model>/config.pbtxt`` plus version folders."""

    def __init__(self, root: Path, *, rescan_interval_s: float = 1.0) -> None:
        self.root = root
        self.rescan_interval_s = rescan_interval_s
        self._names: frozenset[ModelName] = frozenset()
        self._scanned_at = float("-inf")
        self._specs: dict[ModelName, tuple[float, ModelSpec]] = {}

    def names(self, *, refresh: bool = False) -> frozenset[ModelName]:
        """Model names (folders with a config.pbtxt), rescanned at most once per interval."""
        now = time.monotonic()
        if refresh or now - self._scanned_at >= self.rescan_interval_s:
            if not self.root.is_dir():
                raise ConfigError(f"model repository not found: {self.root}")
            self._names = frozenset(
                p.name for p in self.root.iterdir() if (p / "config.pbtxt").is_file())
            self._scanned_at = now
        return self._names

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and (
            model in self.names() or model in self.names(refresh=True))

    def model_dir(self, model: ModelName) -> Path:
        if model not in self:
            raise ModelNotFound(model)
        return self.root / model

    def spec(self, model: ModelName) -> ModelSpec:
        """The model's parsed config.pbtxt, re-read when the file changes."""
        path = self.model_dir(model) / "config.pbtxt"
        mtime = path.stat().st_mtime
        cached = self._specs.get(model)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        config = parse_config(path.read_text(), source=str(path))
        if config.name and config.name != model:
            raise ConfigError(f"{path}: name '{config.name}' does not match folder '{model}'")
        spec = spec_from_config(model, config)
        self._specs[model] = (mtime, spec)
        return spec

    def versions(self, model: ModelName) -> list[str]:
        """Version folders (numeric names), ascending."""
        root = self.model_dir(model)
        return sorted((p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                      key=int)

    def files(self, model: ModelName) -> ModelFiles:
        """Every file of the model directory except config.pbtxt.

        A load with any ``file:`` override replaces the whole model directory, so these must
        all travel with it.
        """
        root = self.model_dir(model)
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "config.pbtxt"
        }

    def weight_bytes(self, model: ModelName) -> int:
        """Bytes on disk in the model's version folders (a first guess at its footprint)."""
        root = self.model_dir(model)
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
