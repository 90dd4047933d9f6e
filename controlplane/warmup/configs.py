"""Versioned warm-up configs and Triton's batch statistics, in SQLite."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from controlplane.errors import ControlPlaneError, ErrorCode
from controlplane.store.base import utcnow
from controlplane.store.database import Database
from controlplane.store.models import BatchStat, WarmupConfig, WarmupFile
from controlplane.triton.repository import json_to_pbtxt
from controlplane.types import ModelName
from controlplane.warmup.types import WarmupPlan


@dataclass(frozen=True)
class StoredWarmup:
    model: ModelName
    version: int
    created_at: datetime
    reason: str
    default: bool
    coverage: float
    #: ``model_warmup`` in Triton's JSON form
    samples: list[dict[str, Any]]
    covered: frozenset[str]
    notes: list[str]
    #: model-directory-relative path -> bytes
    files: dict[str, bytes]

    def pbtxt(self) -> str:
        """The ``model_warmup`` block as it would read in config.pbtxt, plus a file list."""
        text = json_to_pbtxt({"model_warmup": self.samples}) if self.samples else ""
        listing = "".join(f"# file {path}: {len(data)} bytes\n"
                          for path, data in sorted(self.files.items()))
        return f"# warm-up config v{self.version} of {self.model}: {self.reason}\n" + (
            listing + text)


def _snapshot(row: WarmupConfig) -> StoredWarmup:
    return StoredWarmup(
        model=row.model, version=row.version, created_at=row.created_at, reason=row.reason,
        default=row.default, coverage=row.coverage, samples=row.samples,
        covered=frozenset(row.covered), notes=row.notes,
        files={f.path: f.data for f in row.files})


def diff(old: StoredWarmup | None, new: StoredWarmup) -> str:
    """Unified diff of two versions' pbtxt (everything added when there is no old one)."""
    before = old.pbtxt().splitlines(keepends=True) if old else []
    return "".join(difflib.unified_diff(
        before, new.pbtxt().splitlines(keepends=True),
        fromfile=f"v{old.version}" if old else "/dev/null", tofile=f"v{new.version}"))


class WarmupStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def latest(self, model: ModelName) -> StoredWarmup | None:
        with self.db.session() as session:
            row = session.scalar(select(WarmupConfig).where(WarmupConfig.model == model)
                                 .order_by(WarmupConfig.version.desc()).limit(1))
            return _snapshot(row) if row else None

    def get(self, model: ModelName, version: int) -> StoredWarmup:
        with self.db.session() as session:
            row = session.scalar(select(WarmupConfig).where(
                WarmupConfig.model == model, WarmupConfig.version == version))
            if row is None:
                raise ControlPlaneError(f"model '{model}' has no warm-up config v{version}",
                                        code=ErrorCode.NOT_FOUND)
            return _snapshot(row)

    def versions(self, model: ModelName) -> list[StoredWarmup]:
        with self.db.session() as session:
            return [_snapshot(r) for r in session.scalars(
                select(WarmupConfig).where(WarmupConfig.model == model)
                .order_by(WarmupConfig.version))]

    def save(self, model: ModelName, plan: WarmupPlan, reason: str) -> StoredWarmup:
        """Store ``plan`` as the next version, unless it equals the latest (returned then)."""
        samples = plan.model_warmup()
        files = dict(plan.files)
        with self.db.session() as session:
            latest = session.scalar(select(WarmupConfig).where(WarmupConfig.model == model)
                                    .order_by(WarmupConfig.version.desc()).limit(1))
            if (latest is not None and latest.samples == samples
                    and {f.path: f.data for f in latest.files} == files
                    and set(latest.covered) == plan.covered):
                return _snapshot(latest)
            row = WarmupConfig(
                model=model, version=(latest.version + 1) if latest else 1,
                created_at=utcnow(), reason=reason, default=plan.default,
                coverage=plan.coverage, samples=samples, covered=sorted(plan.covered),
                notes=list(plan.notes),
                files=[WarmupFile(path=p, data=d) for p, d in sorted(files.items())])
            session.add(row)
            session.flush()
            return _snapshot(row)

    # -- batch statistics --------------------------------------------------------------------
    def batch_stats(self, model: ModelName) -> dict[int, int]:
        with self.db.session() as session:
            return {b: n for b, n in session.execute(
                select(BatchStat.batch_size, BatchStat.executions)
                .where(BatchStat.model == model))}

    def add_batch_stats(self, model: ModelName, deltas: dict[int, int], now: float) -> None:
        rows = [{"model": model, "batch_size": b, "executions": n, "updated_at": now}
                for b, n in deltas.items() if n > 0]
        if not rows:
            return
        stmt = sqlite_insert(BatchStat)
        with self.db.session() as session:
            session.execute(stmt.on_conflict_do_update(
                index_elements=["model", "batch_size"],
                set_={"executions": BatchStat.executions + stmt.excluded.executions,
                      "updated_at": func.max(BatchStat.updated_at, stmt.excluded.updated_at)}),
                rows)
