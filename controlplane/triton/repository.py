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
    #: ``optional: true``: requests may leave the input out
    optional: bool = False

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

    @property
    def is_ensemble(self) -> bool:
        """``platform: "ensemble"``: Triton forbids ``model_warmup`` and ``instance_group``."""
        return self.config.get("platform") == "ensemble"

    @property
    def sequence_batching(self) -> bool:
        """Stateful: requests need sequence control (start, end, correlation id)."""
        return "sequence_batching" in self.config

    @property
    def decoupled(self) -> bool:
        """``model_transaction_policy { decoupled: true }``: answers only through a stream."""
        return bool(self.config.get("model_transaction_policy", {}).get("decoupled", False))

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
                optional=bool(getattr(t, "optional", False)),
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


def name_refusal(model: ModelName) -> str | None:
    """Why Triton's Python backend cannot serve a model of this name; None when it can.

    Seen with the 2.51 stub: a name with a space leaves the load hanging until its timeout,
    a non-ASCII one fails in the stub with UnicodeEncodeError (shared/notes/triton-facts.md).
    """
    if not model.isascii() or not model.isprintable():
        return ("name has non-ASCII or control characters, which Triton's Python backend "
                "stub cannot handle (it fails with UnicodeEncodeError)")
    if any(ch.isspace() for ch in model):
        return ("name contains whitespace, which Triton's Python backend stub cannot handle "
                "(the load hangs until it times out)")
    return None


def spec_from_json(name: ModelName, config: ModelConfigJson) -> ModelSpec:
    """A spec from a config in Triton's JSON form (what the ModelConfig RPC returns);
    ConfigError when it does not parse as a ModelConfig."""
    try:
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig(),
                                        ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ConfigError(f"{name}: config from Triton: {exc}") from None
    return spec_from_config(name, message)


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
        if not isinstance(model, str):
            return False
        if model in self.names():
            return True
        # A miss looks at that one folder rather than rescanning the repository: clients
        # choose the names, and one stat per unknown name is all they may cost us.
        if (not model or len(model) > 255 or "/" in model or "\0" in model
                or model in (".", "..")):
            return False
        try:
            added = (self.root / model / "config.pbtxt").is_file()
        except OSError:
            return False
        return added and model in self.names(refresh=True)

    def refusal(self, model: ModelName) -> str | None:
        """Why this model is refused at discovery (see :func:`name_refusal`); None: it is not."""
        return name_refusal(model)

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
