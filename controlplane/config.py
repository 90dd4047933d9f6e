"""Configuration: one ``Settings`` object, prefix ``WARMCTL_``.

Sources, strongest first: keyword arguments, environment (``WARMCTL_TRITON__GRPC_PORT=9001``),
then a TOML file named by ``WARMCTL_CONFIG_FILE`` or passed to :func:`load_settings`.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from controlplane.errors import ConfigError

ENV_PREFIX = "WARMCTL_"

_config_file: ContextVar[Path | None] = ContextVar("warmctl_config_file", default=None)


class TritonSettings(BaseModel):
    """Where Triton is, and how long we wait for it."""

    #: gRPC address (host:port) of an external Triton; unset: start the embedded tritonserver.
    url: str | None = None
    #: Prometheus endpoint of an external Triton, for the plugin's memory and load-time metrics.
    metrics_url: str | None = None
    #: Override of the tritonserver binary (default: the one in the nvidia-pytriton wheel).
    binary: Path | None = None
    host: str = "127.0.0.1"
    #: 0 picks a free port at start-up.
    grpc_port: int = Field(default=0, ge=0, le=65535)
    http_port: int = Field(default=0, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    startup_timeout_s: float = Field(default=60.0, gt=0)
    stop_timeout_s: float = Field(default=15.0, gt=0)
    #: Timeout of every short call (health, index, statistics, config).
    call_timeout_s: float = Field(default=10.0, gt=0)
    #: A load returns only after every instance initialized and warmed up: allow for that.
    load_timeout_s: float = Field(default=300.0, gt=0)
    #: Unload is asynchronous in Triton; this bounds the wait until the model is really gone.
    unload_timeout_s: float = Field(default=60.0, gt=0)
    #: How often the control plane aligns its model states with Triton's repository index
    #: (a load that finished after our timeout, models changed behind our back).
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    #: Triton's auto-complete runs the Python backend in an extra stub process at every load
    #: (~1.3 s of a 2.5 s load here). Our configs are complete; set False only for models
    #: whose config.pbtxt relies on auto-completion.
    disable_auto_complete_config: bool = True
    extra_args: list[str] = Field(default_factory=list)


class ModelSettings(BaseModel):
    """Operator settings for one model."""

    #: Loaded at start-up, before /readyz turns ready, and never unloaded by the scheduler.
    pinned: bool = False
    #: Pinned models load in descending priority.
    priority: int = 0
    #: Keep a few real request payloads per shape (bounded, see traffic.*) as warm-up data.
    sample_payloads: bool = False


class GatewaySettings(BaseModel):
    """The KServe-v2 gRPC front door clients use instead of Triton's own port."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    #: deadline of a request whose client set none (a lazy load counts against it)
    default_deadline_s: float = Field(default=120.0, gt=0)
    #: after a failed load, requests fail at once with its reason for this long
    retry_failed_load_after_s: float = Field(default=30.0, ge=0)
    #: RepositoryModelLoad/Unload on the gateway (routed through the control plane)
    allow_repository_control: bool = False
    #: seconds in-flight requests get to finish at shutdown
    grace_s: float = Field(default=5.0, ge=0)


class TrafficSettings(BaseModel):
    """Recording of what clients send: raw requests, per-minute usage, shapes, samples."""

    enabled: bool = True
    flush_interval_s: float = Field(default=1.0, gt=0)
    #: observations buffered at most between flushes; beyond, new ones are counted and dropped
    max_buffer: int = Field(default=200_000, gt=0)
    request_retention_h: float = Field(default=48.0, gt=0)
    usage_retention_days: float = Field(default=35.0, gt=0)
    shape_retention_days: float = Field(default=14.0, gt=0)
    sample_per_shape: int = Field(default=4, ge=0)
    sample_max_bytes: int = Field(default=1 << 20, gt=0)
    sample_max_model_bytes: int = Field(default=16 << 20, gt=0)
    sample_retention_days: float = Field(default=7.0, gt=0)


class AdminSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class ProbeOptions(BaseModel):
    """Requests sent after Triton reports a model ready, before it gets traffic."""

    #: probes end when the last ``window`` latencies of each probed shape lie within
    #: ``tolerance`` of their median ...
    window: int = Field(default=5, ge=2)
    tolerance: float = Field(default=0.10, gt=0)
    #: ... or at these bounds, whichever comes first
    max_probes: int = Field(default=60, ge=0)
    max_s: float = Field(default=5.0, ge=0)
    #: how many of the most frequent warm-up shapes are probed
    shapes: int = Field(default=3, ge=1)


class WarmupOptions(BaseModel):
    """Warm-up generated from recorded traffic and applied at every load."""

    enabled: bool = True
    coverage: float = Field(default=0.95, gt=0, le=1)
    batch_coverage: float = Field(default=0.95, gt=0, le=1)
    max_samples: int = Field(default=12, ge=1)
    max_buckets_per_dim: int = Field(default=4, ge=1)
    #: executions per warm-up sample
    count: int = Field(default=3, ge=1)
    max_total_elements: int = Field(default=50_000_000, gt=0)
    default_variable_length: int = Field(default=16, ge=1)
    #: generation looks at this much recent traffic (when it holds ``min_requests``)
    recent_window_h: float = Field(default=24.0, gt=0)
    #: requests needed before traffic replaces the default config or can signal drift
    min_requests: int = Field(default=50, ge=1)
    #: regenerate when this share of the last ``drift_window_s`` falls outside the config
    drift_threshold: float = Field(default=0.10, gt=0, le=1)
    drift_window_s: float = Field(default=3600.0, gt=0)
    drift_check_interval_s: float = Field(default=60.0, gt=0)
    #: apply a regenerated config at once by a reload (the old instance serves meanwhile);
    #: otherwise it applies at the model's next load
    reload_on_drift: bool = False
    probe: ProbeOptions = Field(default_factory=ProbeOptions)


class KeepWarmRule(BaseModel):
    """An operator rule: keep ``model`` loaded on ``days`` from ``start`` to ``end``."""

    model: str
    #: cron day_of_week: "mon-fri", "sat,sun", "*"
    days: str = "mon-fri"
    #: "HH:MM", in ``timezone``
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")
    timezone: str = "UTC"


class SchedulerOptions(BaseModel):
    """Preloading and unloading from usage forecasts, under memory budgets."""

    enabled: bool = True
    #: ours, always_on, keepalive_10m, lru, hybrid_histogram (see ``warmctl simulate``)
    policy: str = "ours"
    #: the policy's one knob (ours: GB*s of residency one avoided cold start is worth)
    param: float | None = None
    #: host memory the models of this Triton instance may hold (unset: no limit)
    memory_budget_mb: float | None = Field(default=None, gt=0)
    #: GPU memory for models on the GPU (0: no GPU; models run on the CPU)
    gpu_memory_budget_mb: float = Field(default=0.0, ge=0)
    #: how often the plan is revisited (the policy may ask for earlier wake-ups)
    interval_s: float = Field(default=5.0, gt=0)
    #: recorded arrivals replayed into the forecast at start-up
    replay_h: float = Field(default=48.0, ge=0)
    #: load-to-ready assumed for a model never loaded yet
    default_load_s: float = Field(default=2.0, gt=0)
    #: memory assumed per model instance on top of its weights before it is measured (the
    #: Python backend stub with torch holds ~230 MiB here)
    runtime_overhead_mb: float = Field(default=230.0, ge=0)
    #: pre-read into the page cache the files of models expected within this horizon
    staging_horizon_s: float = Field(default=900.0, ge=0)
    rules: list[KeepWarmRule] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    #: State: the SQLite file, Triton's log, the assembled backend directory.
    data_dir: Path = Path(".warmctl")
    model_repository: Path = Path("model_repository")
    #: Our Python-based Triton backends (one folder per backend).
    backends_dir: Path = Path("triton_backends")
    #: SQLAlchemy URL; default: ``sqlite:///<data_dir>/controlplane.db``.
    database_url: str | None = None
    instance_name: str = "default"
    triton: TritonSettings = Field(default_factory=TritonSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    traffic: TrafficSettings = Field(default_factory=TrafficSettings)
    warmup: WarmupOptions = Field(default_factory=WarmupOptions)
    scheduler: SchedulerOptions = Field(default_factory=SchedulerOptions)
    models: dict[str, ModelSettings] = Field(default_factory=dict)

    @field_validator("data_dir", "model_repository", "backends_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'controlplane.db'}"

    def pinned_models(self) -> list[str]:
        """Pinned model names, highest priority first (ties by name, for a stable order)."""
        pinned = [(name, s) for name, s in self.models.items() if s.pinned]
        return [name for name, _ in sorted(pinned, key=lambda item: (-item[1].priority, item[0]))]

    def sampled_models(self) -> list[str]:
        return sorted(name for name, s in self.models.items() if s.sample_payloads)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings, turning any validation problem into one clear :class:`ConfigError`."""
    import os

    if config_file is None and (env_file := os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")):
        config_file = Path(env_file)
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        source = f" in {config_file}" if config_file else ""
        raise ConfigError(f"invalid configuration{source}: {problems}") from None
    except ValueError as exc:  # malformed TOML
        raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
    finally:
        _config_file.reset(token)
