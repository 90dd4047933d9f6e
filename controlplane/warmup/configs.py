"""Versioned warm-up configs and Triton's batch statistics, in SQLite.

What loads and unloads record (a rejection, probe proofs, batch statistics) is queued
(``queue_*``: the database's write-behind) so that a full or stalled disk holds up no load;
reads and new versions (which need the next version number) are synchronous calls.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select

from controlplane.errors import ControlPlaneError, ErrorCode
from controlplane.store.base import utcnow
from controlplane.store.database import Database
from controlplane.store.dialect import greatest, upsert
from controlplane.store.models import BatchStat, WarmupConfig, WarmupFile, WarmupProof
from controlplane.store.writebehind import Outcome
from controlplane.triton.repository import json_to_pbtxt
from controlplane.types import ModelName
from controlplane.warmup.types import WarmupPlan

#: proof states: served by a probe, failed as a probe, refused by Triton as warm-up
PROVEN, FAILED, REJECTED = "ok", "failed", "rejected"


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
    #: Triton refused a load that applied this version (never applied again)
    rejected_at: datetime | None = None
    rejected_reason: str | None = None

    def sample_states(self, proofs: dict[str, str]) -> dict[str, str]:
        """Sample name -> ``proven`` (applied at loads), ``pending`` (probed after the next
        load), ``failed`` (its probe failed) or ``rejected`` (Triton refused it)."""
        words = {PROVEN: "proven", FAILED: "failed", REJECTED: "rejected"}
        return {s["name"]: words.get(proofs.get(self.sample_key(s), ""), "pending")
                for s in self.samples}

    def pbtxt(self, states: dict[str, str] | None = None) -> str:
        """The ``model_warmup`` block as it would read in config.pbtxt, plus a file list;
        with ``states`` (see :meth:`sample_states`), a line saying which samples apply."""
        text = json_to_pbtxt({"model_warmup": self.samples}) if self.samples else ""
        listing = "".join(f"# file {path}: {len(data)} bytes\n"
                          for path, data in sorted(self.files.items()))
        rejected = ""
        if self.rejected_at is not None:
            why = (self.rejected_reason or "").strip().splitlines() or [""]
            rejected = (f"# REJECTED by Triton at {self.rejected_at:%Y-%m-%d %H:%M:%S} "
                        f"(never applied again): {why[0][:500]}\n")
        # without samples the notes are the whole story (why none): show them
        why_none = "" if self.samples else "".join(f"# {n}\n" for n in self.notes)
        if states:
            why_none += ("# sample states (only proven samples run as model_warmup): "
                         + ", ".join(f"{n} {st}" for n, st in states.items()) + "\n")
        return f"# warm-up config v{self.version} of {self.model}: {self.reason}\n" + (
            rejected + why_none + listing + text)

    def sample_key(self, sample: dict[str, Any]) -> str:
        """The proof key of one of this version's samples (see :func:`sample_key`)."""
        return sample_key(sample, self.files)


def sample_key(sample: dict[str, Any], files: dict[str, bytes]) -> str:
    """What identifies a sample as a request: batch size, and per input its datatype, dims and
    data (zeros or the data file's hash). Names and counts are left out, so the same request
    keeps its key across versions."""
    inputs = {}
    for name, entry in sorted(sample.get("inputs", {}).items()):
        if "input_data_file" in entry:
            content = files.get(f"warmup/{entry['input_data_file']}", b"")
            data = "sha256:" + hashlib.sha256(content).hexdigest()
        else:
            data = "zero" if entry.get("zero_data") else "random"
        inputs[name] = [entry.get("data_type"), [int(d) for d in entry.get("dims", [])], data]
    text = json.dumps([int(sample.get("batch_size", 0)), inputs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]



def _snapshot(row: WarmupConfig) -> StoredWarmup:
    return StoredWarmup(
        model=row.model, version=row.version, created_at=row.created_at, reason=row.reason,
        default=row.default, coverage=row.coverage, samples=row.samples,
        covered=frozenset(row.covered), notes=row.notes,
        files={f.path: f.data for f in row.files}, rejected_at=row.rejected_at,
        rejected_reason=row.rejected_reason)


def diff(old: StoredWarmup | None, new: StoredWarmup) -> str:
    """Unified diff of two versions' pbtxt (everything added when there is no old one)."""
    before = old.pbtxt().splitlines(keepends=True) if old else []
    return "".join(difflib.unified_diff(
        before, new.pbtxt().splitlines(keepends=True),
        fromfile=f"v{old.version}" if old else "/dev/null", tofile=f"v{new.version}"))


class WarmupStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    # -- queued (the event loop: never block, never raise) -----------------------------------
    def queue_reject(self, model: ModelName, version: int,
                     reason: str) -> asyncio.Future[Outcome]:
        return self.db.writes.submit("warmup", partial(self.reject, model, version, reason))

    def queue_proofs(self, model: ModelName,
                     states: dict[str, tuple[str, str | None]]) -> asyncio.Future[Outcome]:
        return self.db.writes.submit("warmup", partial(self.set_proofs, model, dict(states)))

    def queue_batch_stats(self, model: ModelName, deltas: dict[int, int],
                          now: float) -> asyncio.Future[Outcome]:
        return self.db.writes.submit("warmup", partial(self.add_batch_stats, model,
                                                       dict(deltas), now))

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
        """Store ``plan`` as the next version, unless it equals the latest (returned then) or a
        version Triton rejected (that one is returned, still rejected: an identical
        regeneration must not be applied again)."""
        samples = plan.model_warmup()
        files = dict(plan.files)

        def same(row: WarmupConfig) -> bool:
            return (row.samples == samples and {f.path: f.data for f in row.files} == files
                    and set(row.covered) == plan.covered)

        with self.db.session() as session:
            latest = session.scalar(select(WarmupConfig).where(WarmupConfig.model == model)
                                    .order_by(WarmupConfig.version.desc()).limit(1))
            if latest is not None and same(latest):
                return _snapshot(latest)
            if samples:
                for rejected in session.scalars(select(WarmupConfig).where(
                        WarmupConfig.model == model, WarmupConfig.rejected_at.is_not(None))):
                    if same(rejected):
                        return _snapshot(rejected)
            row = WarmupConfig(
                model=model, version=(latest.version + 1) if latest else 1,
                created_at=utcnow(), reason=reason, default=plan.default,
                coverage=plan.coverage, samples=samples, covered=sorted(plan.covered),
                notes=list(plan.notes),
                files=[WarmupFile(path=p, data=d) for p, d in sorted(files.items())])
            session.add(row)
            session.flush()
            return _snapshot(row)

    def reject(self, model: ModelName, version: int, reason: str) -> None:
        """Mark ``version`` rejected by Triton with its reason (kept within 16 KiB)."""
        with self.db.session() as session:
            row = session.scalar(select(WarmupConfig).where(
                WarmupConfig.model == model, WarmupConfig.version == version))
            if row is not None:
                row.rejected_at = utcnow()
                row.rejected_reason = reason[:16384]

    # -- proofs: which samples the model served ----------------------------------------------
    def proofs(self, model: ModelName) -> dict[str, str]:
        """Sample key -> proof state (ok, failed, rejected)."""
        with self.db.session() as session:
            return {k: st for k, st in session.execute(
                select(WarmupProof.key, WarmupProof.state).where(WarmupProof.model == model))}

    def set_proofs(self, model: ModelName, states: dict[str, tuple[str, str | None]]) -> None:
        """Record key -> (state, detail); a rejection is final, other states are replaced."""
        if not states:
            return
        now = utcnow()
        with self.db.session() as session:
            for key, (state, detail) in states.items():
                row = session.get(WarmupProof, (model, key))
                if row is None:
                    session.add(WarmupProof(model=model, key=key, state=state, at=now,
                                            detail=None if detail is None else detail[:4096]))
                elif row.state != REJECTED:
                    row.state, row.at = state, now
                    row.detail = None if detail is None else detail[:4096]

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
        with self.db.session() as session:
            upsert(session, BatchStat, rows, key=["model", "batch_size"],
                   update=lambda new: {"executions": BatchStat.executions + new.executions,
                                       "updated_at": greatest(BatchStat.updated_at,
                                                              new.updated_at)})
