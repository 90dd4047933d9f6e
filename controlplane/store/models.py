"""Tables. Every schema change comes with an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.store.base import Base


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
    memory_bytes: Mapped[int | None]
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
    memory_bytes: Mapped[int | None]
    #: the plugin's load-time breakdown and other per-load figures
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    model: Mapped[ModelRecord] = relationship(back_populates="events")
