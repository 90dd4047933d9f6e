"""Configuration: one ``Settings`` object, prefix ``WARMCTL_``.

Sources, strongest first: keyword arguments, environment (``WARMCTL_TRITON__GRPC_PORT=9001``),
then a TOML file named by ``WARMCTL_CONFIG_FILE`` or passed to :func:`load_settings`. A
refused setting is reported with where it was set: the argument, the ``WARMCTL_*`` variable,
or the file and its table.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from contextvars import ContextVar
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from controlplane.errors import ConfigError

ENV_PREFIX = "WARMCTL_"
_INSTANCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def valid_instance_name(name: str) -> bool:
    """Instance names become metric labels, store keys, URL path segments and file names."""
    return _INSTANCE_NAME.fullmatch(name) is not None
#: ``triton_backends/`` of the source tree or editable install this package belongs to
PACKAGE_BACKENDS = Path(__file__).resolve().parents[1] / "triton_backends"

_config_file: ContextVar[Path | None] = ContextVar("warmctl_config_file", default=None)


class Section(BaseModel):
    """Base of every settings section: an unknown key is an error, not silently ignored.

    A misspelt key (``[scheduler] memory_budget = 8000`` for ``memory_budget_mb``) would
    otherwise leave the default in force without a word.
    """

    model_config = ConfigDict(extra="forbid")


class SupervisionSettings(Section):
    """How Triton is watched after start-up (``[triton.supervision]``)."""

    #: liveness probe: every ``probe_interval_s``, each answer awaited ``probe_timeout_s``
    probe_interval_s: float = Field(default=1.0, gt=0)
    probe_timeout_s: float = Field(default=1.0, gt=0)
    #: probes missed in a row before Triton counts as unresponsive (not ready, models cold)
    probe_misses: int = Field(default=3, ge=1)
    #: an embedded Triton unresponsive this long is killed and restarted (0: never). Much
    #: longer than the not-ready threshold: a merely stopped or swapping server comes back
    #: by itself, with every model still loaded
    hang_restart_after_s: float = Field(default=60.0, ge=0)
    #: restart an embedded Triton that died; first delay, doubled per restart in the window
    restart: bool = True
    restart_delay_s: float = Field(default=1.0, ge=0)
    restart_delay_max_s: float = Field(default=30.0, ge=0)
    #: at most this many restarts within ``restart_window_s``; then it stays down (and says
    #: so) until the operator restarts it (``POST /triton/restart``)
    max_restarts: int = Field(default=5, ge=1)
    restart_window_s: float = Field(default=600.0, gt=0)


class TritonSettings(Section):
    """Where Triton is, and how long we wait for it."""

    #: gRPC address (host:port) of an external Triton; unset: start the embedded tritonserver.
    url: str | None = None
    #: Prometheus endpoint of an external Triton, for the plugin's memory and load-time metrics.
    metrics_url: str | None = None
    #: HTTP endpoint of an external Triton (the gateway's HTTP door forwards there); default:
    #: the host of ``url``, port 8000
    http_url: str | None = None
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
    supervision: SupervisionSettings = Field(default_factory=SupervisionSettings)


class RolloutOptions(Section):
    """How a new model version is verified and shifted to (``[rollouts]``, and per model
    ``[models.<name>.rollout]`` with any of the same keys)."""

    #: a new version folder in the repository starts a rollout by itself (noticed within
    #: ``triton.reconcile_interval_s``)
    auto: bool = True
    #: the target version's share of the model's traffic at each step, percent, ascending,
    #: ending at 100
    steps: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])
    #: how long each step lasts before the next, seconds
    dwell_s: float = Field(default=20.0, ge=0)
    #: verification: the target's converged latency at most this times the active's; live,
    #: its p50 at most this times the active's
    latency_factor: float = Field(default=2.0, gt=1)
    #: verification: outputs agree with the active version's within these (None: not
    #: compared), or the same top-k indices of score outputs
    atol: float | None = Field(default=None, ge=0)
    rtol: float | None = Field(default=None, ge=0)
    top_k: int | None = Field(default=None, ge=1)
    #: live: the target's error rate may exceed the active's by at most this (0..1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    #: live: outcomes a version needs in a step before it is judged
    min_requests: int = Field(default=20, ge=1)
    #: verification samples sent to both versions
    max_samples: int = Field(default=32, ge=1, le=1000)

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[float]) -> list[float]:
        if not value or value[-1] != 100 or any(not 0 < v <= 100 for v in value) \
                or value != sorted(value):
            raise ValueError("steps are ascending percentages in (0, 100], ending at 100")
        return value


class ClusterSettings(Section):
    """Several control-plane replicas on one store (``[cluster]``): one leader (a lease in
    the store) decides; the others serve their gateway and the read API."""

    enabled: bool = False
    #: this replica's name (unique among the replicas); default: host name and process id
    replica: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
                         min_length=1, max_length=128)
    #: how long a lease lasts without renewal: a dead leader is replaced within this
    lease_s: float = Field(default=10.0, ge=1, le=300)
    #: this replica's admin API as the others reach it (writes sent to a follower name it);
    #: default: ``http://<admin.host>:<admin port>``
    advertise_url: str | None = None


class ModelSettings(Section):
    """Operator settings for one model."""

    #: rollout settings of this model's new versions (unset keys: ``[rollouts]``'s)
    rollout: dict[str, Any] = Field(default_factory=dict)

    #: Loaded at start-up, before /readyz turns ready, and never unloaded by the scheduler.
    pinned: bool = False
    #: Pinned models load in descending priority.
    priority: int = 0
    #: Keep a few real request payloads per shape (bounded, see traffic.*) as warm-up data.
    sample_payloads: bool = False
    #: Generated warm-up for this model: False loads it exactly as config.pbtxt says (its own
    #: model_warmup kept) and sends it no probe requests.
    warmup: bool = True
    #: Never load this model (requests get UNAVAILABLE saying so; the scheduler skips it).
    disabled: bool = False


class GatewaySettings(Section):
    """The KServe-v2 gRPC front door clients use instead of Triton's own port."""

    enabled: bool = True
    host: str = "127.0.0.1"
    #: KServe-v2 gRPC (Triton's port 8001)
    port: int = Field(default=8001, ge=0, le=65535)
    #: KServe-v2 HTTP/REST beside gRPC (Triton's port 8000); off with ``http_enabled = false``
    http_port: int = Field(default=8000, ge=0, le=65535)
    http_enabled: bool = True
    #: deadline of a request whose client set none (a lazy load counts against it)
    default_deadline_s: float = Field(default=120.0, gt=0)
    #: gateway processes serving both doors on the shared ports (SO_REUSEPORT), beside the
    #: control process (``gateway/workers/``); 1: the gateway runs inside the control
    #: process. None: half the cores are left to Triton, one to the control process, the
    #: rest (1 to 8) serve
    workers: int | None = Field(default=None, ge=1, le=64)
    #: RepositoryModelLoad/Unload on the gateway (routed through the control plane)
    allow_repository_control: bool = False
    #: seconds in-flight requests get to finish at shutdown
    grace_s: float = Field(default=5.0, ge=0)
    #: largest request accepted (bytes); a larger one gets RESOURCE_EXHAUSTED naming this
    #: setting the moment it arrives. The default is gRPC's ceiling and Triton's own (2 GiB
    #: - 1): what plain Triton serves, the gateway serves
    max_request_bytes: int = Field(default=(2 << 30) - 1, gt=0, le=(2 << 30) - 1)
    #: request bytes held at once across every request in progress (waiting for a load,
    #: forwarded); past it a request is refused at once with RESOURCE_EXHAUSTED naming this
    #: setting. None: an eighth of the memory the process may use (the machine's, or its
    #: cgroup limit if lower): the process holds up to ~3.5x this at the peak of a burst of
    #: large requests (``gateway/buffered.py``, ``bench/request_memory.py``)
    max_buffered_bytes: int | None = Field(default=None, gt=0)
    #: send a model's Python traceback (Triton's error text after "At:"/"Traceback") to
    #: clients; by default they get the error's first line (the root cause) only
    expose_tracebacks: bool = False
    #: server-wide RPCs, refused unless enabled here or called with the admin token in the
    #: ``authorization: Bearer <token>`` metadata: system/CUDA shared-memory register and
    #: unregister (Triton reads and writes any region it is told of) ...
    allow_shared_memory: bool = False
    #: ... and changes to Triton's log and trace settings (reading them is allowed)
    allow_server_settings: bool = False


class LifecycleSettings(Section):
    """Loads that failed: how long automatic retries (requests, scheduler, pins) wait."""

    #: after the first failure in a row; requests meanwhile fail at once with its reason
    retry_initial_s: float = Field(default=30.0, ge=0)
    #: each further failure in a row multiplies the wait ...
    retry_multiplier: float = Field(default=2.0, ge=1)
    #: ... up to this
    retry_max_s: float = Field(default=1800.0, ge=0)


class TrafficSettings(Section):
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
    #: one served request in this many is read (at flush time, never stored) for the value
    #: ranges of integer inputs that warm-up data stays inside; 0 turns it off
    range_sample_every: int = Field(default=16, ge=0)


class StoreSettings(Section):
    """The store (SQLite) when its disk is full, read-only or stalled (``[store]``).

    Writes are queued and written when the store takes them (``store/writebehind.py``);
    nothing on the serving path waits for the disk longer than these bounds.
    """

    #: longest wait of an admin read or a load's warm-up lookup: then a 503, or a plain load
    call_timeout_s: float = Field(default=2.0, gt=0)
    #: longest wait for a queued write while the store is healthy (read-your-writes)
    settle_s: float = Field(default=1.0, ge=0)
    #: writes held per kind while the store refuses them; beyond, dropped and counted
    max_queued_writes: int = Field(default=10_000, gt=0)
    #: the write probe: one tiny write every ``probe_interval_s``; a probe or queued write
    #: that has not returned after ``stall_after_s`` makes the store ``stalled``
    probe_interval_s: float = Field(default=2.0, gt=0)
    stall_after_s: float = Field(default=3.0, gt=0)
    #: a clean stop writes what is queued for at most this long; the rest is counted dropped
    stop_flush_s: float = Field(default=5.0, ge=0)


class CompileCacheSettings(Section):
    """Compiled code of ``torch_compile`` models, kept between loads (``[compile_cache]``).

    The plugin in Triton reads and writes the directory (``WARMCTL_COMPILE_CACHE_DIR`` in
    the embedded Triton's environment; set it yourself for an external Triton, on a volume
    every Triton instance mounts); the control plane bounds it and shows it.
    """

    enabled: bool = True
    #: default ``<data_dir>/compile_cache``
    dir: Path | None = None
    #: all entries together; least recently used ones go first
    max_mb: float = Field(default=2048.0, gt=0)
    #: one model's artifacts; larger ones are not cached
    max_entry_mb: float = Field(default=256.0, gt=0)
    #: entries kept per model (older keys: another torch, an older model file)
    keep_per_model: int = Field(default=2, ge=1)


class AdminSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: bearer tokens (``admin/auth.py``): ``read`` for GETs, the page and ``/metrics``;
    #: ``admin`` for everything. With neither set, no token is asked for and the admin API
    #: refuses to listen on anything but a loopback address. Never logged.
    read_token: SecretStr | None = None
    admin_token: SecretStr | None = None
    #: a file of ``read: <token>`` / ``admin: <token>`` lines (a mounted secret), read at start
    token_file: Path | None = None
    #: other origins (``https://ops.example.com``) whose pages may call mutating routes
    allowed_origins: list[str] = Field(default_factory=list)
    #: ``GET /metrics`` (Prometheus); off: 404, and nothing is collected
    metrics: bool = True


class ProbeOptions(Section):
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


class WarmupOptions(Section):
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
    #: warm-up data files make the load send the whole model directory as ``file:``
    #: overrides; above this total, samples that need files are left out (zero-data ones stay)
    max_file_override_bytes: int = Field(default=64 << 20, ge=0)
    probe: ProbeOptions = Field(default_factory=ProbeOptions)


class KeepWarmRule(Section):
    """An operator rule: keep ``model`` loaded on ``days`` from ``start`` to ``end``."""

    model: str
    #: cron day_of_week: "mon-fri", "sat,sun", "*"
    days: str = "mon-fri"
    #: "HH:MM", in ``timezone``
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")
    timezone: str = "UTC"


class SchedulerOptions(Section):
    """Preloading and unloading from usage forecasts, under memory budgets."""

    enabled: bool = True
    #: ours, always_on, keepalive_10m, lru, hybrid_histogram (see ``warmctl simulate``)
    policy: str = "ours"
    #: the policy's one knob (ours: GB*s of residency one avoided cold start is worth)
    param: float | None = None
    #: host memory the models of this Triton instance may hold (unset: no limit)
    memory_budget_mb: float | None = Field(default=None, gt=0)
    #: GPU memory models may hold, summed over the GPUs Triton sees. Unset: what the GPUs
    #: have (Triton's ``nv_gpu_memory_total_bytes``) minus ``gpu_memory_reserve_mb`` per GPU;
    #: 0 on a host without GPUs. A budget above 0 on a host without GPUs is refused at start.
    gpu_memory_budget_mb: float | None = Field(default=None, ge=0)
    #: left free on every GPU when the budget is derived (CUDA context, allocator slack)
    gpu_memory_reserve_mb: float = Field(default=1024.0, ge=0)
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


class InstanceSettings(Section):
    """One Triton instance of the fleet (``[instances.<name>]``).

    ``embedded``: warmctl starts a tritonserver of its own for it (``[triton]`` gives the
    binary, timeouts and arguments; ports here, 0 = free ones). ``static``: a Triton someone
    else runs, at ``url`` (compose services, VMs). ``kubernetes``: a Triton pod found by the
    Kubernetes provider (``[kubernetes]``), attached to like a static one. Budgets default
    to ``[scheduler]``'s.
    """

    provider: Literal["embedded", "static", "kubernetes"] = "embedded"
    #: static, kubernetes: gRPC address host:port (required); its Prometheus endpoint
    #: (optional); its HTTP endpoint for the gateway's HTTP door (default: the gRPC host,
    #: port 8000)
    url: str | None = None
    metrics_url: str | None = None
    http_url: str | None = None
    #: embedded: the GPUs this tritonserver sees (``CUDA_VISIBLE_DEVICES``: "0", "1,2");
    #: unset: the ones warmctl sees. One Triton per GPU is the usual single-host layout.
    cuda_visible_devices: str | None = None
    grpc_port: int = Field(default=0, ge=0, le=65535)
    http_port: int = Field(default=0, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: host and GPU memory the models on this instance may hold (MB); unset: ``[scheduler]``'s
    memory_budget_mb: float | None = Field(default=None, gt=0)
    gpu_memory_budget_mb: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _provider_fields(self) -> InstanceSettings:
        if self.provider in ("static", "kubernetes") and not self.url:
            raise ValueError(f"a {self.provider} instance needs url = \"host:port\" (its "
                             "gRPC address)")
        if self.provider == "embedded" and (self.url or self.metrics_url or self.http_url):
            raise ValueError("url, metrics_url and http_url are for static instances; an "
                             "embedded one is started by warmctl (set provider = \"static\")")
        return self


class KubernetesSettings(Section):
    """Triton pods found and scaled through the Kubernetes API (``[kubernetes]``,
    ``fleet/kubernetes.py``).

    Pods in ``namespace`` matching ``label_selector`` that run and are Ready join the fleet
    as instances named after the pod; ``workload_kind``/``workload_name`` is scaled through
    its ``scale`` subresource.
    """

    enabled: bool = False
    namespace: str = Field(default="default", min_length=1)
    label_selector: str = Field(default="app=triton", min_length=1)
    #: Triton's ports in each pod (its container's); metrics 0: not scraped
    grpc_port: int = Field(default=8001, ge=1, le=65535)
    http_port: int = Field(default=8000, ge=1, le=65535)
    metrics_port: int = Field(default=8002, ge=0, le=65535)
    #: the workload that owns the pods: scaled by the autoscaler
    workload_kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    workload_name: str = Field(default="triton", min_length=1)
    #: unset: the in-cluster config (the pod's service account); else this kubeconfig file
    kubeconfig: Path | None = None
    #: every API call but a watch answers within this (seconds)
    request_timeout_s: float = Field(default=10.0, gt=0)
    #: one watch call lasts this long on the server (``timeoutSeconds``), then is renewed
    #: from the last resourceVersion seen; the client gives it ``request_timeout_s`` more
    watch_timeout_s: int = Field(default=300, ge=1)
    #: after a failed list or watch: first wait, doubled per failure in a row, at most max
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)


class FleetSettings(Section):
    """Replicas and routing over the instances (``[fleet]``)."""

    #: forecast requests per second one replica is meant to carry: a model expected to get
    #: more gets more replicas (one per instance at most)
    replica_rate_per_s: float = Field(default=5.0, gt=0)
    #: replicas of a pinned model (capped by the instances there are): a spare for failover
    pinned_replicas: int = Field(default=2, ge=1)
    #: at most this many replicas of any model (0: one per instance)
    max_replicas: int = Field(default=0, ge=0)
    #: a drain waits this long for in-flight requests to finish before it unloads
    drain_timeout_s: float = Field(default=30.0, gt=0)
    #: when an instance stops serving, load its unreplicated models elsewhere (hot first)
    failover: bool = True
    #: a new replica's share of its model's traffic rises from ``ramp_start_weight`` to its
    #: full weight over this many seconds (0: no ramp); the ramp pauses while the replica
    #: does worse than its peers (``fleet/ramp.py``)
    ramp_s: float = Field(default=30.0, ge=0)
    ramp_start_weight: float = Field(default=0.05, gt=0, le=1)
    #: the replica plan takes the larger of the forecast rate and the rate measured over
    #: this many recent seconds, so a burst gets replicas within seconds
    measured_rate_window_s: float = Field(default=60.0, gt=0)


class AutoscalerSettings(Section):
    """Instances that follow the forecast and the measured load (``[autoscaler]``).

    Instances it adds are started by ``provider`` from ``template`` (ports chosen free),
    pre-warmed with the models the replica plan gives them, and only then routed to.
    """

    enabled: bool = False
    min_instances: int = Field(default=1, ge=1)
    max_instances: int = Field(default=4, ge=1)
    #: instances kept started and warm outside routing, promoted at once on a spike or a
    #: failure (and replaced once used)
    standby: int = Field(default=0, ge=0)
    #: how the autoscaler starts an instance: ``embedded`` (a tritonserver of its own) or
    #: ``kubernetes`` (the workload's scale subresource; the new pod joins through the
    #: provider's watch). A static one is someone else's to start
    provider: Literal["embedded", "kubernetes"] = "embedded"
    #: per-instance keys of the instances it adds (budgets, GPUs)
    template: InstanceSettings = Field(default_factory=lambda: InstanceSettings())
    #: decisions every this many seconds
    interval_s: float = Field(default=5.0, gt=0)
    #: no scale-out within this long of the last one, no scale-in within this long of any
    scale_out_cooldown_s: float = Field(default=60.0, ge=0)
    scale_in_cooldown_s: float = Field(default=600.0, ge=0)
    #: saturated: requests in flight per serving replica above this, or a model's recent
    #: p50 latency above ``latency_ratio`` times its steady p50
    max_in_flight_per_replica: float = Field(default=8.0, gt=0)
    latency_ratio: float = Field(default=2.0, gt=1)
    #: how far ahead of a forecast peak to look, beyond the measured start-to-warm time
    lead_margin_s: float = Field(default=60.0, ge=0)
    #: the start-to-warm time assumed before one was measured
    default_warm_up_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalerSettings:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) is above max_instances "
                             f"({self.max_instances})")
        return self


class HealthSettings(Section):
    """Periodic health checks of every loaded replica (``[health]``, ``fleet/health.py``).

    A replica that failed one is out of routing at once and reloaded with back-off; it
    takes traffic again once a probe passes.
    """

    enabled: bool = True
    #: each replica is probed about this often (seconds), unless it answered real traffic
    #: successfully meanwhile
    interval_s: float = Field(default=30.0, gt=0)
    #: each interval is drawn within +- this fraction of ``interval_s`` (probes of many
    #: replicas spread out rather than arrive together)
    jitter: float = Field(default=0.2, ge=0, lt=1)
    #: a probe unanswered this long (seconds) fails
    timeout_s: float = Field(default=10.0, gt=0)
    #: a probe slower than this many times its load's converged probe latency fails...
    latency_factor: float = Field(default=10.0, gt=1)
    #: ...when also slower than this (milliseconds): fast models jitter by far more
    latency_floor_ms: float = Field(default=100.0, ge=0)
    #: an unhealthy replica's reloads: first after this many seconds, then times
    #: ``reload_multiplier`` per failed one, at most ``reload_max_s``
    reload_initial_s: float = Field(default=5.0, gt=0)
    reload_multiplier: float = Field(default=2.0, ge=1)
    reload_max_s: float = Field(default=300.0, gt=0)


class LogSettings(Section):
    """warmctl's own log (``observability/logs.py``); ``--verbose`` forces ``debug``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``text``: one readable line per record; ``json``: one JSON object per line
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    #: State: the SQLite file, Triton's log, the assembled backend directory.
    data_dir: Path = Path(".warmctl")
    model_repository: Path = Path("model_repository")
    #: Our Python-based Triton backends (one folder per backend). The default is the one
    #: beside this package, wherever warmctl runs from (not the working directory).
    backends_dir: Path = PACKAGE_BACKENDS
    #: SQLAlchemy URL; default: ``sqlite:///<data_dir>/controlplane.db``.
    database_url: str | None = None
    instance_name: str = "default"
    triton: TritonSettings = Field(default_factory=TritonSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    traffic: TrafficSettings = Field(default_factory=TrafficSettings)
    warmup: WarmupOptions = Field(default_factory=WarmupOptions)
    scheduler: SchedulerOptions = Field(default_factory=SchedulerOptions)
    compile_cache: CompileCacheSettings = Field(default_factory=CompileCacheSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    #: the Triton instances (``[instances.<name>]``); none configured: one, named
    #: ``instance_name``, from ``[triton]`` (embedded, or static when ``triton.url`` is set),
    #: or none when ``[kubernetes]`` is enabled (its pods are the fleet)
    instances: dict[str, InstanceSettings] = Field(default_factory=dict)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    autoscaler: AutoscalerSettings = Field(default_factory=AutoscalerSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    rollouts: RolloutOptions = Field(default_factory=RolloutOptions)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @field_validator("instances")
    @classmethod
    def _instance_names(cls, value: dict[str, InstanceSettings]) -> dict[str, InstanceSettings]:
        # names become metric labels, store keys, URL path segments and file names
        bad = [n for n in value if not _INSTANCE_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"instance names must match {_INSTANCE_NAME.pattern}: "
                             + ", ".join(repr(n[:80]) for n in bad))
        return value

    @model_validator(mode="after")
    def _cluster_drives_shared_tritons(self) -> Settings:
        # replicas share the Tritons: one a replica started itself is no one else's
        if self.cluster.enabled and any(
                spec.provider == "embedded" for spec in self.fleet_instances().values()):
            raise ValueError("cluster.enabled: every replica drives the same Tritons, so "
                             "instances must be static or kubernetes (set [instances.<name>] "
                             "provider = \"static\" with url, or [kubernetes])")
        return self

    @model_validator(mode="after")
    def _model_rollouts(self) -> Settings:
        # refused at start-up, by key, rather than when a rollout reads them
        for name, model in self.models.items():
            if model.rollout:
                try:
                    RolloutOptions.model_validate({**self.rollouts.model_dump(),
                                                   **model.rollout})
                except ValidationError as exc:
                    err = exc.errors()[0]
                    where = ".".join(map(str, err["loc"]))
                    raise ValueError(f"models.{name}.rollout.{where}: {err['msg']}") from None
        return self

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

    def fleet_instances(self) -> dict[str, InstanceSettings]:
        """The instances to run, in a stable order (see ``instances``)."""
        t, sched = self.triton, self.scheduler
        if self.instances:
            return {name: self.with_defaults(spec)
                    for name, spec in sorted(self.instances.items())}
        if self.kubernetes.enabled and not t.url:
            return {}  # the pods the Kubernetes provider finds are the fleet
        if t.url:
            single = InstanceSettings(provider="static", url=t.url, metrics_url=t.metrics_url,
                                      http_url=t.http_url)
        else:
            single = InstanceSettings(grpc_port=t.grpc_port, http_port=t.http_port,
                                      metrics_port=t.metrics_port)
        return {self.instance_name: single.model_copy(update={
            "memory_budget_mb": sched.memory_budget_mb,
            "gpu_memory_budget_mb": sched.gpu_memory_budget_mb})}

    def with_defaults(self, spec: InstanceSettings) -> InstanceSettings:
        """``spec`` with the budgets it leaves unset taken from ``[scheduler]``, per instance."""
        sched = self.scheduler
        return spec.model_copy(update={
            "memory_budget_mb": spec.memory_budget_mb or sched.memory_budget_mb,
            "gpu_memory_budget_mb": (sched.gpu_memory_budget_mb
                                     if spec.gpu_memory_budget_mb is None
                                     else spec.gpu_memory_budget_mb)})

    def rollout_options(self, model: str) -> RolloutOptions:
        """``[rollouts]`` with ``[models.<model>.rollout]`` over it; raises ConfigError."""
        own = self.models.get(model)
        if own is None or not own.rollout:
            return self.rollouts
        try:
            return RolloutOptions.model_validate({**self.rollouts.model_dump(), **own.rollout})
        except ValidationError as exc:
            raise ConfigError(f"[models.{model}.rollout]: {exc.errors()[0]['msg']}") from None

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
    if config_file is None and (env_file := os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")):
        config_file = Path(env_file)
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        origins = _Origins(overrides, config_file)
        problems = "; ".join(_problem(err["loc"], err["type"], err["msg"], origins)
                             for err in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None
    except SettingsError as exc:  # a WARMCTL_* value that is not the JSON its field needs
        raise ConfigError(f"invalid configuration: {exc}") from None
    except ValueError as exc:  # malformed TOML
        raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
    finally:
        _config_file.reset(token)


class _Origins:
    """Where a setting came from, for error messages: the sources ``Settings`` merged,
    strongest first (keyword arguments, ``WARMCTL_*`` variables, the TOML file), read again.
    Only built when the settings were refused."""

    def __init__(self, overrides: dict[str, Any], config_file: Path | None) -> None:
        self.overrides = overrides
        self.env = EnvSettingsSource(Settings)()
        self.config_file = config_file
        self.toml = (TomlConfigSettingsSource(Settings, toml_file=config_file)()
                     if config_file is not None else {})

    def of(self, loc: tuple[int | str, ...]) -> str | None:
        """``argument``, ``environment variable WARMCTL_…``, or ``<file>, [table]``; None
        for a problem of the whole settings (no key)."""
        if not loc:
            return None
        if _holds(self.overrides, loc):
            return "argument"
        if _holds(self.env, loc):
            return f"environment variable {_variable(loc)}"
        if _holds(self.toml, loc):
            return f"{self.config_file}, {_toml_table(loc)}"
        return None


def _holds(values: Any, loc: tuple[int | str, ...]) -> bool:
    """``values`` (nested dicts and lists) has an entry at ``loc``."""
    for part in loc:
        found = (part in values if isinstance(values, dict) else
                 isinstance(values, list) and isinstance(part, int) and 0 <= part < len(values))
        if not found:
            return False
        values = values[part]
    return True


def _variable(loc: tuple[int | str, ...]) -> str:
    """The ``WARMCTL_*`` variable that set ``loc``: ``WARMCTL_GATEWAY__PORT``, or, for a key
    inside a JSON value, the variable holding it (``WARMCTL_GATEWAY='{"port": 1}'``). Names
    are matched without case, as pydantic-settings reads them."""
    names = {name.lower(): name for name in os.environ}
    keys = [str(p) for p in loc[:next((i for i, p in enumerate(loc) if isinstance(p, int)),
                                      len(loc))]]
    for n in range(len(keys), 0, -1):
        name = names.get((ENV_PREFIX + "__".join(keys[:n])).lower())
        if name is not None:
            return name
    return ENV_PREFIX + "__".join(keys).upper()


def _toml_table(loc: tuple[int | str, ...]) -> str:
    """The TOML table holding the key at ``loc``: ``[gateway]``, ``[[scheduler.rules]] entry
    1``, or ``top level``."""
    table = loc[:-1]
    if not table:
        return "top level"
    if isinstance(table[-1], int):  # an entry of an array of tables
        return f"[[{'.'.join(str(p) for p in table[:-1])}]] entry {table[-1] + 1}"
    return f"[{'.'.join(str(p) for p in table)}]"


def _problem(loc: tuple[int | str, ...], kind: str, message: str, origins: _Origins) -> str:
    where = ".".join(str(p) for p in loc) or "<root>"
    origin = origins.of(loc)
    if origin is not None:
        where += f" ({origin})"
    if kind != "extra_forbidden":
        return f"{where}: {message}"
    close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1, cutoff=0.6)
    return f"{where}: unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the section at ``loc`` accepts (``models.<name>`` is a ModelSettings)."""
    current: Any = Settings
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
            # unwrap ``X | None``
            args = [a for a in get_args(current) if a is not type(None)]
            if get_origin(current) in (Union, UnionType) and len(args) == 1:
                current = args[0]
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
