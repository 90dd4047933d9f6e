"""Tables. Every schema change comes with an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.store.base import Base, BigInt


class ModelRecord(Base):
    """A model on one Triton instance, and its lifecycle state."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("instance", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    #: cold, loading, warming, ready, unloading, failed (lifecycle.states.ModelState)
    state: Mapped[str] = mapped_column(String(16))
    #: why the model is in its state; Triton's message for ``failed``
    reason: Mapped[str | None] = mapped_column(Text)
    state_since: Mapped[datetime]
    pinned: Mapped[bool] = mapped_column(default=False)
    #: resident memory measured by the plugin at the last successful load
    memory_bytes: Mapped[int | None] = mapped_column(BigInt)
    #: load-to-ready seconds of the last successful load
    load_s: Mapped[float | None]

    events: Mapped[list[LoadEvent]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True)


class LoadEvent(Base):
    """One load or unload, from request to outcome."""

    __tablename__ = "load_events"
    __table_args__ = (Index("ix_load_events_model_started", "model_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    #: load or unload
    action: Mapped[str] = mapped_column(String(16))
    #: who asked: api, startup, gateway, scheduler, reconcile
    trigger: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None]
    #: ok, failed or timeout; NULL while in flight (or if the control plane died during it)
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    #: the Triton repository call alone (the rest is our own preparation and checks)
    triton_s: Mapped[float | None]
    memory_bytes: Mapped[int | None] = mapped_column(BigInt)
    #: the plugin's load-time breakdown and other per-load figures
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: the warm-up config applied (warmup_configs.version), NULL for none
    warmup_version: Mapped[int | None]
    #: Triton's compute time for the warm-up samples (part of triton_s)
    warmup_s: Mapped[float | None]
    #: probe requests sent after Triton reported ready, and how long they took
    probe_count: Mapped[int | None]
    probe_s: Mapped[float | None]
    #: latency of the first probe: what the first real request would have paid
    first_probe_ms: Mapped[float | None]
    #: the latency the probes converged to (median of the last window)
    probe_latency_ms: Mapped[float | None]

    model: Mapped[ModelRecord] = relationship(back_populates="events")


class RequestRecord(Base):
    """One inference request that passed the gateway (kept for a configurable retention)."""

    __tablename__ = "requests"
    __table_args__ = (Index("ix_requests_model_arrived", "model", "arrived_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(255))
    #: as the client asked ("" = Triton's version policy)
    version: Mapped[str] = mapped_column(String(32))
    instance: Mapped[str] = mapped_column(String(64))
    #: inputs sorted by name, ``name:DATATYPE:d0xd1`` joined by ``,`` (batch dim included)
    signature: Mapped[str] = mapped_column(Text)
    #: unix seconds; traffic is stored as floats so series are cheap to compute
    arrived_at: Mapped[float]
    #: arrival to response, including any wait for a load; NULL when unknown (streams)
    latency_ms: Mapped[float | None]
    #: OK or the gRPC status name
    outcome: Mapped[str] = mapped_column(String(32))
    #: the model was not ready when the request arrived
    cold: Mapped[bool]
    #: time the request waited for the model to become ready
    wait_ms: Mapped[float | None]


class UsageMinute(Base):
    """Requests per model per minute: the series forecasts are built from."""

    __tablename__ = "usage_minutes"

    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: unix minute (arrived_at // 60)
    minute: Mapped[int] = mapped_column(primary_key=True)
    requests: Mapped[int]
    errors: Mapped[int]
    cold_starts: Mapped[int]
    latency_sum_ms: Mapped[float]
    latency_max_ms: Mapped[float]


class ShapeStat(Base):
    """How often each input-shape signature reached a model: what warm-up is built from."""

    __tablename__ = "shape_stats"

    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    signature: Mapped[str] = mapped_column(Text, primary_key=True)
    #: [{"name", "datatype", "shape"}] in signature order
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    #: the first dim when every input shares it, else NULL
    batch_size: Mapped[int | None]
    count: Mapped[int] = mapped_column(BigInt)
    first_seen: Mapped[float]
    last_seen: Mapped[float]


class ValueRange(Base):
    """The values an integer input really carried, from a sample of served requests: what
    warm-up data may use when the config names no ``warmctl.input_range`` (0 is not a valid
    id for every model). One row per declared input: bounded by the repository."""

    __tablename__ = "value_ranges"

    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    input: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: smallest value seen
    lo: Mapped[int] = mapped_column(BigInt)
    #: largest value seen (inclusive)
    hi: Mapped[int] = mapped_column(BigInt)
    #: requests the range was read from
    witnesses: Mapped[int] = mapped_column(BigInt)
    updated_at: Mapped[float]


class PayloadSample(Base):
    """A real request payload kept (opt-in, bounded) as warm-up data for its shape."""

    __tablename__ = "payload_samples"
    __table_args__ = (Index("ix_payload_samples_model_signature", "model", "signature"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(255))
    signature: Mapped[str] = mapped_column(Text)
    captured_at: Mapped[float]
    #: [{"name", "datatype", "shape", "offset", "size"}]: slices of ``data``
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    #: the inputs' raw row-major bytes, concatenated in ``inputs`` order
    data: Mapped[bytes]


class WarmupConfig(Base):
    """A generated ``model_warmup``, versioned per model."""

    __tablename__ = "warmup_configs"
    __table_args__ = (UniqueConstraint("model", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(255))
    version: Mapped[int]
    created_at: Mapped[datetime]
    #: why this version exists (first load, drift, operator request)
    reason: Mapped[str] = mapped_column(Text)
    #: built from the config alone: no traffic was recorded yet
    default: Mapped[bool]
    #: share of recorded traffic its shapes cover
    coverage: Mapped[float]
    #: the ``model_warmup`` list, in Triton's JSON config form
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    #: recorded request signatures it counts as covered (drift compares against these)
    covered: Mapped[list[str]] = mapped_column(JSON)
    notes: Mapped[list[str]] = mapped_column(JSON)
    #: set when Triton refused a load that applied this version: it is never applied again
    rejected_at: Mapped[datetime | None]
    #: Triton's reason for refusing it
    rejected_reason: Mapped[str | None] = mapped_column(Text)

    files: Mapped[list[WarmupFile]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin")


class WarmupFile(Base):
    """A data file a warm-up config references (``warmup/<name>`` in the model directory)."""

    __tablename__ = "warmup_files"

    config_id: Mapped[int] = mapped_column(
        ForeignKey("warmup_configs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[bytes]


class WarmupProof(Base):
    """What a model did with one warm-up sample sent as a probe request (or applied).

    A generated sample enters ``model_warmup`` only with state ``ok``: the same request
    (batch size, dims, data) was served by the model after a load without it.
    """

    __tablename__ = "warmup_proofs"

    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: content hash of the sample (batch size, datatypes, dims, data); see warmup.proofs
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: ok (served), failed (the probe failed), rejected (Triton refused the load applying it)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    #: the error, for failed and rejected
    detail: Mapped[str | None] = mapped_column(Text)


class BatchStat(Base):
    """Executions per batch size Triton formed for a model, warm-up and probes excluded."""

    __tablename__ = "batch_stats"

    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    batch_size: Mapped[int] = mapped_column(primary_key=True)
    executions: Mapped[int] = mapped_column(BigInt)
    updated_at: Mapped[float]


class SchedulerJob(Base):
    """APScheduler's job store: APScheduler reads and writes the rows (pickled job state);
    the schema is declared here, as APScheduler's ``SQLAlchemyJobStore`` defines it, so that
    our migrations own it."""

    __tablename__ = "scheduler_jobs"

    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)


class StoreProbe(Base):
    """One row, rewritten every few seconds by the store's write probe (``store/health.py``):
    a write small enough to be answered at once, so a full, read-only or stalled disk shows
    even while nothing else is written."""

    __tablename__ = "store_probe"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: unix seconds of the last probe
    at: Mapped[float]


class FleetInstanceRecord(Base):
    """A Triton instance added while the control plane ran (``POST /instances``, or the
    autoscaler): restored at the next start. Instances of the settings file are not here."""

    __tablename__ = "fleet_instances"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: the instance's keys as ``[instances.<name>]`` takes them (``provider``, ``url``...)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: who added it: ``operator`` or ``autoscaler``
    origin: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class ModelVersionRecord(Base):
    """A model's versions as the fleet serves them (ModelMesh's vModel record): the
    ``active`` version every load pins, and the ``target`` a rollout is moving to."""

    __tablename__ = "model_versions"

    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    active: Mapped[str] = mapped_column(String(20))
    target: Mapped[str | None] = mapped_column(String(20))
    updated_at: Mapped[datetime]


class RolloutRecord(Base):
    """One rollout of a model's new version: its state, step and why (``rollouts/``)."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_model", "model", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(255))
    #: the version it started from, and the one it moves to
    active: Mapped[str] = mapped_column(String(20))
    version: Mapped[str] = mapped_column(String(20))
    #: verifying, shifting, paused, promoted, rolled_back, aborted
    state: Mapped[str] = mapped_column(String(16))
    #: index into ``options["steps"]`` reached (-1 before the first)
    step: Mapped[int]
    #: the target's share of traffic now, 0..1
    share: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    #: who started it: operator, auto
    origin: Mapped[str] = mapped_column(String(16))
    #: the rollout settings in force (``RolloutOptions``), and what verification found
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LeaseRecord(Base):
    """A lease several control-plane replicas compete for (``leadership.py``): who holds it,
    where that replica's admin API is, until when, and how many times it changed hands."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(255))
    #: bumped each time another replica takes the lease (a fencing token)
    epoch: Mapped[int]
    expires_at: Mapped[datetime]
