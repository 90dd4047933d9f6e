"""Response bodies of the admin API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from controlplane.admin.schemas_fleet import ReplicaView
from controlplane.compile_cache.store import CacheEntry
from controlplane.lifecycle.states import ModelState, ModelStatus
from controlplane.store.models import LoadEvent, ShapeStat, UsageMinute
from controlplane.triton.repository import ModelSpec, TensorSpec
from controlplane.warmup.configs import StoredWarmup


class ModelView(BaseModel):
    name: str
    instance: str
    state: ModelState
    reason: str | None
    since: datetime
    pinned: bool
    memory_bytes: int | None
    load_s: float | None
    busy: bool
    #: the operator unloaded it: automatic loads leave it cold until the operator loads it
    #: (``POST /models/{name}/load``) or releases it (``POST /models/{name}/release``)
    held: bool = False
    #: why it is never loaded (``[models.<name>] disabled``, a name Triton cannot serve)
    disabled: str | None = None
    #: failed loads in a row
    failures: int = 0
    #: a failed model's next automatic retry (exponential back-off); None: none pending
    retry_at: datetime | None = None
    #: its replicas that failed their health check, "instance: reason; ..." (they take no
    #: traffic until a probe passes); None: none
    unhealthy: str | None = None
    #: the versions Triton serves it at (its best replica's; empty while cold)
    versions: list[str] = []
    #: the version warmctl pins every load to (``rollouts/versions.py``); None: what plain
    #: Triton would load (no record: the model's own version policy)
    active_version: str | None = None
    #: a rollout's target beside it; None: no rollout under way
    target_version: str | None = None
    #: the model on each instance, in the fleet's order (the fields above are its best
    #: replica's: ready > warming > loading > unloading > failed > cold)
    replicas: list[ReplicaView] = []

    @classmethod
    def of(cls, status: ModelStatus, replicas: list[ReplicaView] | None = None) -> ModelView:
        values = _status_values(status, replicas)
        return cls(**values, replicas=replicas or [])


def _status_values(status: ModelStatus, replicas: list[ReplicaView] | None = None
                   ) -> dict[str, Any]:
    values = {k: v for k, v in status.__dict__.items() if k in ModelView.model_fields}
    if status.state is ModelState.COLD:
        values["memory_bytes"] = None  # what it held when it was loaded, not what it holds
    if status.retry_at is not None:
        values["retry_at"] = datetime.fromtimestamp(status.retry_at, UTC)
    values["unhealthy"] = status.unhealthy or "; ".join(
        f"{r.instance}: {r.unhealthy}" for r in replicas or [] if r.unhealthy) or None
    return values


class TensorView(BaseModel):
    name: str
    datatype: str
    dims: list[int]

    @classmethod
    def of(cls, spec: TensorSpec) -> TensorView:
        return cls(name=spec.name, datatype=spec.datatype, dims=list(spec.dims))


class EventView(BaseModel):
    #: the Triton instance the load or unload ran on
    instance: str | None = None
    action: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    outcome: str | None
    error: str | None
    triton_s: float | None
    memory_bytes: int | None
    warmup_version: int | None
    warmup_s: float | None
    probe_count: int | None
    probe_s: float | None
    first_probe_ms: float | None
    probe_latency_ms: float | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, event: LoadEvent) -> EventView:
        return cls.model_validate(event, from_attributes=True)


class CompileCacheView(BaseModel):
    """One entry of the compile cache (``torch_compile`` models; ``compile_cache/store.py``)."""

    key: str
    bytes: int
    created: datetime
    last_used: datetime
    #: what the key is made of: torch, triton, device, gpu, cpu_isa, model_sha256, options
    fields: dict[str, Any]

    @classmethod
    def of(cls, entry: CacheEntry) -> CompileCacheView:
        return cls(key=entry.key, bytes=entry.bytes, created=entry.created,
                   last_used=entry.last_used, fields=entry.fields)


class ModelDetail(ModelView):
    #: None when config.pbtxt cannot be parsed; ``config_error`` says why
    backend: str | None
    max_batch_size: int | None
    inputs: list[TensorView]
    outputs: list[TensorView]
    config_error: str | None
    #: newest first
    events: list[EventView]
    #: torch.compile artifacts kept for later loads, most recently used first
    compile_cache: list[CompileCacheView] = []

    @classmethod
    def build(cls, status: ModelStatus, spec: ModelSpec | str,
              events: list[LoadEvent], cache: list[CacheEntry] | None = None,
              replicas: list[ReplicaView] | None = None,
              instances: dict[int, str] | None = None) -> ModelDetail:
        """``spec`` is the parsed config, or the reason it could not be parsed;
        ``instances``: event id -> the instance it ran on."""
        parsed = spec if isinstance(spec, ModelSpec) else None
        where = instances or {}
        return cls(
            **_status_values(status, replicas), replicas=replicas or [],
            backend=parsed.backend if parsed else None,
            max_batch_size=parsed.max_batch_size if parsed else None,
            inputs=[TensorView.of(t) for t in parsed.inputs] if parsed else [],
            outputs=[TensorView.of(t) for t in parsed.outputs] if parsed else [],
            config_error=None if parsed else str(spec),
            events=[EventView.of(e).model_copy(update={"instance": where.get(e.id)})
                    for e in events],
            compile_cache=[CompileCacheView.of(e) for e in cache or []],
        )


class Health(BaseModel):
    status: str
    triton: str
    detail: dict[str, Any] = {}


class UsagePoint(BaseModel):
    minute: datetime
    requests: int
    errors: int
    cold_starts: int
    mean_latency_ms: float | None
    max_latency_ms: float | None

    @classmethod
    def of(cls, row: UsageMinute) -> UsagePoint:
        return cls(
            minute=datetime.fromtimestamp(row.minute * 60, UTC),
            requests=row.requests, errors=row.errors, cold_starts=row.cold_starts,
            mean_latency_ms=row.latency_sum_ms / row.requests if row.requests else None,
            max_latency_ms=row.latency_max_ms if row.requests else None,
        )


class UsageSeries(BaseModel):
    model: str
    minutes: int
    requests: int
    cold_starts: int
    #: only minutes with traffic
    points: list[UsagePoint]


class ShapeInput(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ShapeView(BaseModel):
    signature: str
    inputs: list[ShapeInput]
    batch_size: int | None
    count: int
    share: float
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def of(cls, row: ShapeStat, total: int) -> ShapeView:
        return cls(
            signature=row.signature, inputs=[ShapeInput(**i) for i in row.inputs],
            batch_size=row.batch_size, count=row.count, share=row.count / total,
            first_seen=datetime.fromtimestamp(row.first_seen, UTC),
            last_seen=datetime.fromtimestamp(row.last_seen, UTC),
        )


class WarmupConfigView(BaseModel):
    model: str
    version: int
    created_at: datetime
    reason: str
    default: bool
    coverage: float
    #: ``model_warmup`` in Triton's JSON config form
    samples: list[dict[str, Any]]
    #: path -> bytes, for the data files the samples read
    files: dict[str, int]
    covered: list[str]
    notes: list[str]
    pbtxt: str
    #: Triton refused a load with this version: it is never applied again
    rejected: bool = False
    rejected_at: datetime | None = None
    rejected_reason: str | None = None
    #: sample name -> proven, pending, failed or rejected (only proven ones are applied)
    sample_states: dict[str, str] | None = None

    @classmethod
    def of(cls, stored: StoredWarmup,
           states: dict[str, str] | None = None) -> WarmupConfigView:
        return cls(
            model=stored.model, version=stored.version, created_at=stored.created_at,
            reason=stored.reason, default=stored.default, coverage=stored.coverage,
            samples=stored.samples, files={p: len(d) for p, d in stored.files.items()},
            covered=sorted(stored.covered), notes=stored.notes, pbtxt=stored.pbtxt(states),
            rejected=stored.rejected_at is not None, rejected_at=stored.rejected_at,
            rejected_reason=stored.rejected_reason, sample_states=states)
