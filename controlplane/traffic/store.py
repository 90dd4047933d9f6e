"""The store side of traffic (SQLite or PostgreSQL): batched writes with roll-ups, retention,
and the reads on top."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select

from controlplane.store.database import Database
from controlplane.store.dialect import greatest, insert_tuples, least, upsert
from controlplane.store.models import (
    PayloadSample,
    RequestRecord,
    ShapeStat,
    UsageMinute,
    ValueRange,
)
from controlplane.traffic.observation import OK, Observation, signature_of
from controlplane.traffic.ranges import observed_ranges
from controlplane.types import ModelName


@dataclass(frozen=True)
class Retention:
    requests_s: float = 2 * 86400
    usage_s: float = 35 * 86400
    shapes_s: float = 14 * 86400
    samples_s: float = 7 * 86400


class TrafficStore:
    def __init__(self, database: Database, instance: str) -> None:
        self.db = database
        self.instance = instance

    def write(self, observations: Sequence[Observation]) -> None:
        """One transaction: raw rows, per-minute usage, shape histogram, payload samples,
        value ranges of integer inputs (from witnesses and payloads)."""
        if not observations:
            return
        rows: list[tuple[Any, ...]] = []
        usage: dict[tuple[str, int], list[float]] = {}
        shapes: dict[tuple[str, str], dict[str, Any]] = {}
        samples: list[dict[str, Any]] = []
        for o in observations:
            sig = signature_of(o.inputs)
            latency_ms = None if o.latency_s is None else o.latency_s * 1e3
            rows.append((o.model, o.version, self.instance, sig.text, o.arrived_at, latency_ms,
                         o.outcome, o.cold, None if o.wait_s is None else o.wait_s * 1e3))
            u = usage.setdefault((o.model, int(o.arrived_at // 60)), [0, 0, 0, 0.0, 0.0])
            u[0] += 1
            u[1] += o.outcome != OK
            u[2] += o.cold
            if latency_ms is not None:
                u[3] += latency_ms
                u[4] = max(u[4], latency_ms)
            if o.outcome != OK:
                continue  # a rejected shape must not shape warm-up
            s = shapes.get((o.model, sig.text))
            if s is None:
                shapes[(o.model, sig.text)] = {
                    "model": o.model, "signature": sig.text, "inputs": sig.inputs,
                    "batch_size": sig.batch_size, "count": 1,
                    "first_seen": o.arrived_at, "last_seen": o.arrived_at}
            else:
                s["count"] += 1
                s["first_seen"] = min(s["first_seen"], o.arrived_at)
                s["last_seen"] = max(s["last_seen"], o.arrived_at)
            if o.payload is not None:
                samples.append(_sample_row(o, sig.text))
        with self.db.session() as session:
            # The driver's executemany on tuples: the ORM's bulk insert costs several times
            # more per row, on a thread that shares the GIL with the gateway.
            insert_tuples(session, RequestRecord, _REQUEST_COLUMNS, rows)
            upsert(session, UsageMinute,
                   [{"model": m, "minute": minute, "requests": u[0], "errors": u[1],
                     "cold_starts": u[2], "latency_sum_ms": u[3], "latency_max_ms": u[4]}
                    for (m, minute), u in usage.items()],
                   key=["model", "minute"],
                   update=lambda new: {
                       "requests": UsageMinute.requests + new.requests,
                       "errors": UsageMinute.errors + new.errors,
                       "cold_starts": UsageMinute.cold_starts + new.cold_starts,
                       "latency_sum_ms": UsageMinute.latency_sum_ms + new.latency_sum_ms,
                       "latency_max_ms": greatest(UsageMinute.latency_max_ms,
                                                  new.latency_max_ms),
                   })
            if shapes:
                upsert(session, ShapeStat, list(shapes.values()), key=["model", "signature"],
                       update=lambda new: {
                           "count": ShapeStat.count + new.count,
                           "first_seen": least(ShapeStat.first_seen, new.first_seen),
                           "last_seen": greatest(ShapeStat.last_seen, new.last_seen),
                       })
            if samples:
                session.execute(insert(PayloadSample), samples)
            if ranges := observed_ranges(observations):
                now = max(o.arrived_at for o in observations)
                upsert(session, ValueRange,
                       [{"model": m, "input": i, "lo": lo, "hi": hi, "witnesses": n,
                         "updated_at": now} for (m, i), (lo, hi, n) in ranges.items()],
                       key=["model", "input"],
                       update=lambda new: {"lo": least(ValueRange.lo, new.lo),
                                           "hi": greatest(ValueRange.hi, new.hi),
                                           "witnesses": ValueRange.witnesses + new.witnesses,
                                           "updated_at": new.updated_at})

    def prune(self, now: float, retention: Retention) -> dict[str, int]:
        """Delete what is older than its retention; returns rows removed per table."""
        statements = {
            "requests": delete(RequestRecord).where(
                RequestRecord.arrived_at < now - retention.requests_s),
            "usage_minutes": delete(UsageMinute).where(
                UsageMinute.minute < (now - retention.usage_s) // 60),
            "shape_stats": delete(ShapeStat).where(
                ShapeStat.last_seen < now - retention.shapes_s),
            "payload_samples": delete(PayloadSample).where(
                PayloadSample.captured_at < now - retention.samples_s),
        }
        with self.db.session() as session:
            return {table: int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
                    for table, stmt in statements.items()}

    # -- reads ------------------------------------------------------------------------------
    def usage(self, model: ModelName, since: float, until: float) -> list[UsageMinute]:
        with self.db.session() as session:
            return list(session.scalars(
                select(UsageMinute)
                .where(UsageMinute.model == model, UsageMinute.minute >= since // 60,
                       UsageMinute.minute <= until // 60)
                .order_by(UsageMinute.minute)))

    def shapes(self, model: ModelName) -> list[ShapeStat]:
        with self.db.session() as session:
            return list(session.scalars(
                select(ShapeStat).where(ShapeStat.model == model)
                .order_by(ShapeStat.count.desc(), ShapeStat.signature)))

    def signature_counts(self, model: ModelName, since: float
                         ) -> list[tuple[str, int, float]]:
        """(signature, requests, last seen) of successful requests since ``since``."""
        with self.db.session() as session:
            return [(s, int(n), float(t)) for s, n, t in session.execute(
                select(RequestRecord.signature, func.count(), func.max(RequestRecord.arrived_at))
                .where(RequestRecord.model == model, RequestRecord.arrived_at >= since,
                       RequestRecord.outcome == OK)
                .group_by(RequestRecord.signature))]

    def requests(self, model: ModelName, *, limit: int = 1000) -> list[RequestRecord]:
        with self.db.session() as session:
            return list(session.scalars(
                select(RequestRecord).where(RequestRecord.model == model)
                .order_by(RequestRecord.arrived_at.desc()).limit(limit)))

    def arrivals(self, since: float, models: Iterable[ModelName] | None = None
                 ) -> list[tuple[str, float]]:
        """(model, arrived_at) in time order: what a forecast replays after a restart."""
        query = select(RequestRecord.model, RequestRecord.arrived_at).where(
            RequestRecord.arrived_at >= since)
        if models is not None:
            query = query.where(RequestRecord.model.in_(list(models)))
        with self.db.session() as session:
            return [(m, t) for m, t in session.execute(query.order_by(RequestRecord.arrived_at))]

    def samples(self, model: ModelName, signature: str | None = None) -> list[PayloadSample]:
        query = select(PayloadSample).where(PayloadSample.model == model)
        if signature is not None:
            query = query.where(PayloadSample.signature == signature)
        with self.db.session() as session:
            return list(session.scalars(query.order_by(PayloadSample.captured_at)))

    def value_ranges(self, model: ModelName) -> dict[str, tuple[int, int]]:
        """Input -> half-open [lo, hi + 1) of the values its served requests carried."""
        with self.db.session() as session:
            return {name: (int(lo), int(hi) + 1) for name, lo, hi in session.execute(
                select(ValueRange.input, ValueRange.lo, ValueRange.hi)
                .where(ValueRange.model == model))}

    def sample_totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(model, signature) -> (samples, bytes) kept now."""
        with self.db.session() as session:
            return {
                (m, s): (int(n), int(b or 0))
                for m, s, n, b in session.execute(
                    select(PayloadSample.model, PayloadSample.signature, func.count(),
                           func.sum(func.length(PayloadSample.data)))
                    .group_by(PayloadSample.model, PayloadSample.signature))
            }


_REQUEST_COLUMNS = ("model", "version", "instance", "signature", "arrived_at", "latency_ms",
                    "outcome", "cold", "wait_ms")


def _sample_row(o: Observation, signature: str) -> dict[str, Any]:
    assert o.payload is not None
    raw, spans = o.payload
    inputs, chunks, offset = [], [], 0
    for header, (start, end) in zip(o.inputs, spans, strict=True):
        inputs.append({"name": header.name, "datatype": header.datatype,
                       "shape": list(header.shape), "offset": offset, "size": end - start})
        chunks.append(raw[start:end])
        offset += end - start
    return {"model": o.model, "signature": signature, "captured_at": o.arrived_at,
            "inputs": inputs, "data": b"".join(chunks)}
