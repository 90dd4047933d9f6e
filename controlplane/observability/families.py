"""The metric families of one scrape, built from a :class:`Snapshot` (in a worker thread).

Names follow Prometheus' conventions (``warmctl_`` prefix, ``_total`` counters, ``_seconds``
and ``_bytes`` units); every family is labelled by ``instance``: the Triton instance for
per-instance figures (lifecycle, Triton, models, memory, requests in flight), the control
plane's own ``instance_name`` for what is counted over the whole fleet (gateway traffic, the
recorder, scheduler actions, plan decisions). With one instance both are the same name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from controlplane import __version__
from controlplane.lifecycle.states import ModelState
from controlplane.observability.feeds import Histogram
from controlplane.observability.status import StatusView

_MB = 2**20


@dataclass(frozen=True)
class InstanceFigures:
    """One Triton instance's part of a scrape."""

    name: str
    events: dict[tuple[str, str, str], int]
    durations: dict[tuple[str, str, str], Histogram]
    phases: dict[str, Histogram]
    triton_up: bool
    restarts: int
    outages: int
    triton_info: dict[str, str] | None
    #: requests in flight on it (the router balances on this)
    outstanding: int
    draining: bool
    #: inference requests the gateway sent to it since start
    requests: int = 0


@dataclass(frozen=True)
class StoreFigures:
    """The store's write-behind and health, for one scrape."""

    #: ok, unwritable or stalled (``store/health.py``)
    state: str
    #: kind -> queued weight (records for traffic, writes otherwise)
    queued: dict[str, int]
    written: dict[str, int]
    #: (kind, why) -> dropped weight
    dropped: dict[tuple[str, str], int]


#: why a queued store write or a recorded request was dropped (``store/writebehind.py``)
DROP_REASONS = ("full", "error", "stopped")
STORE_KINDS = ("model", "state", "event", "warmup", "scheduler", "retention", "traffic")


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape shows, copied on the event loop."""

    requests: dict[tuple[str, str], int]
    cold_starts: dict[str, int]
    waits: dict[str, Histogram]
    #: held (buffered or queued), dropped by why, written, unknown-model requests; None
    #: without a recorder
    recorder: tuple[int, dict[str, int], int, int] | None
    actions: dict[tuple[str, str], int]
    #: in-flight requests, open streams; None without a gateway
    gateway: tuple[int, int] | None
    instances: list[InstanceFigures]
    #: (instance, kind, outcome) -> what the fleet did on its own (replicas, failover, drain)
    fleet_actions: dict[tuple[str, str, str], int]
    status: StatusView
    store: StoreFigures | None = None


def families(snap: Snapshot, instance: str) -> Iterator[Metric]:
    """Every family of a scrape; ``instance`` labels the fleet-wide ones."""
    yield from _traffic(snap, instance)
    yield from _lifecycle(snap, instance)
    yield from _parts(snap, instance)
    yield from _models(snap.status, instance)
    if snap.store is not None:
        yield from _store(snap.store, instance)


def _histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    family.add_metric(labels, h.buckets(), h.total)


def _traffic(snap: Snapshot, i: str) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "warmctl_requests", "Inference requests through the gateway, by outcome (OK or the "
        "gRPC status name); counted when the recorder flushes",
        labels=["instance", "model", "outcome"])
    for (model, outcome), n in sorted(snap.requests.items()):
        requests.add_metric([i, model, outcome], n)
    cold = CounterMetricFamily(
        "warmctl_cold_starts", "Requests that arrived while their model was not ready",
        labels=["instance", "model"])
    for model, n in sorted(snap.cold_starts.items()):
        cold.add_metric([i, model], n)
    wait = HistogramMetricFamily(
        "warmctl_lazy_load_wait_seconds", "Time cold requests waited for their model",
        labels=["instance", "model"])
    for model, h in sorted(snap.waits.items()):
        _histogram(wait, [i, model], h)
    yield from (requests, cold, wait)
    if snap.recorder is not None:
        held, dropped, written, unknown = snap.recorder
        yield _gauge("warmctl_recorder_buffered_observations",
                     "Requests recorded and not yet written to the database (buffered, or "
                     "queued while the store refuses writes)", i, held)
        lost = CounterMetricFamily(
            "warmctl_recorder_dropped", "Observations dropped, by why: full (max_buffer held: "
            "the store fell behind or refuses writes), error (the store can never take the "
            "batch), stopped (not written within a clean stop's bound)",
            labels=["instance", "reason"])
        for reason in DROP_REASONS:
            lost.add_metric([i, reason], dropped.get(reason, 0))
        yield lost
        for name, help_, value in (
                ("written", "Observations written to the database", written),
                ("unknown_model", "Requests for names not in the repository (not stored)",
                 unknown)):
            family = CounterMetricFamily(f"warmctl_recorder_{name}", help_, labels=["instance"])
            family.add_metric([i], value)
            yield family


def _lifecycle(snap: Snapshot, i: str) -> Iterator[Metric]:
    labels = ["instance", "action", "trigger", "outcome"]
    ops = CounterMetricFamily(
        "warmctl_model_operations", "Finished loads, reloads and unloads", labels=labels)
    durations = HistogramMetricFamily(
        "warmctl_model_operation_duration_seconds",
        "Duration of loads (to ready, warm-up and probes included), reloads and unloads",
        labels=labels)
    phases = HistogramMetricFamily(
        "warmctl_load_phase_duration_seconds",
        "Warm-up and readiness-probe time within successful loads",
        labels=["instance", "phase"])
    for inst in snap.instances:
        for key, n in sorted(inst.events.items()):
            ops.add_metric([inst.name, *key], n)
            if key in inst.durations:
                _histogram(durations, [inst.name, *key], inst.durations[key])
        for phase, h in inst.phases.items():
            _histogram(phases, [inst.name, phase], h)
    actions = CounterMetricFamily(
        "warmctl_scheduler_actions", "Actions the scheduler took, by kind and outcome",
        labels=["instance", "kind", "outcome"])
    for (kind, outcome), n in sorted(snap.actions.items()):
        actions.add_metric([i, kind, outcome], n)
    fleet = CounterMetricFamily(
        "warmctl_fleet_actions", "Replicas added and removed, failovers and drains, by the "
        "instance acted on", labels=["instance", "kind", "outcome"])
    for (name, kind, outcome), n in sorted(snap.fleet_actions.items()):
        fleet.add_metric([name, kind, outcome], n)
    yield from (ops, durations, phases, actions, fleet)


def _gauge(name: str, help_: str, instance: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_, labels=["instance"])
    family.add_metric([instance], value)
    return family


def _per_instance(name: str, help_: str, values: dict[str, float],
                  counter: bool = False) -> Metric:
    family: Metric = (CounterMetricFamily if counter else GaugeMetricFamily)(
        name, help_, labels=["instance"])
    for instance, value in values.items():
        family.add_metric([instance], value)  # type: ignore[attr-defined]
    return family


def _parts(snap: Snapshot, i: str) -> Iterator[Metric]:
    yield InfoMetricFamily("warmctl_build", "warmctl's version", value={"version": __version__})
    if snap.gateway is not None:
        yield _gauge("warmctl_gateway_in_flight_requests",
                     "Unary inference requests being served now", i, snap.gateway[0])
        yield _gauge("warmctl_gateway_open_streams", "Streaming inference calls open now", i,
                     snap.gateway[1])
    figures = snap.instances
    yield _per_instance("warmctl_triton_up", "1 while Triton serves",
                        {f.name: float(f.triton_up) for f in figures})
    yield _per_instance("warmctl_triton_restarts",
                        "Restarts of the embedded Triton (a new process came back)",
                        {f.name: f.restarts for f in figures}, counter=True)
    yield _per_instance("warmctl_triton_outages",
                        "Times Triton stopped serving (died, hung, restarted)",
                        {f.name: f.outages for f in figures}, counter=True)
    yield _per_instance("warmctl_instance_outstanding_requests",
                        "Inference requests in flight on the instance now",
                        {f.name: f.outstanding for f in figures})
    yield _per_instance("warmctl_instance_requests",
                        "Inference requests the gateway sent to the instance (stream "
                        "messages included)", {f.name: f.requests for f in figures},
                        counter=True)
    yield _per_instance("warmctl_instance_draining",
                        "1 while the instance is drained (takes no new requests or loads)",
                        {f.name: float(f.draining) for f in figures})
    info = InfoMetricFamily("warmctl_triton", "Where Triton's ports are (scrape its own "
                            "metrics at metrics_url)", labels=["instance"])
    for f in figures:
        if f.triton_info is not None:
            info.add_metric([f.name], f.triton_info)
    if info.samples:
        yield info


def _models(status: StatusView, i: str) -> Iterator[Metric]:
    state = GaugeMetricFamily("warmctl_model_state", "1 for the model's lifecycle state",
                              labels=["instance", "model", "state"])
    level = GaugeMetricFamily("warmctl_model_level",
                              "1 for the model's warmth level (gpu, cpu, staged, cold)",
                              labels=["instance", "model", "level"])
    memory = GaugeMetricFamily("warmctl_model_memory_bytes",
                               "Memory the model holds when loaded (measured or assumed)",
                               labels=["instance", "model"])
    decision = GaugeMetricFamily("warmctl_plan_decision", "1 for the plan's decision",
                                 labels=["instance", "model", "decision"])
    for model in status.models:
        # each replica on its instance; a model seen on none yet: as the fleet reports it
        replicas = [(r.instance, r.state, r.level) for r in model.instances] or \
            [(model.instance, model.state, model.level)]
        for where, current, warmth in replicas:
            for s in ModelState:
                state.add_metric([where, model.name, s.value], 1.0 if current is s else 0.0)
            for lv in ("gpu", "cpu", "staged", "cold"):
                level.add_metric([where, model.name, lv], 1.0 if warmth == lv else 0.0)
            if model.memory_mb is not None:
                memory.add_metric([where, model.name], model.memory_mb * _MB)
        if model.decision is not None:
            decision.add_metric([i, model.name, model.decision], 1.0)
    resident = GaugeMetricFamily("warmctl_memory_resident_bytes",
                                 "Memory held by loaded models, per level",
                                 labels=["instance", "level"])
    budget = GaugeMetricFamily("warmctl_memory_budget_bytes",
                               "The budget of each level (absent: unlimited)",
                               labels=["instance", "level"])
    for inst in status.instances:
        for mem in inst.memory:
            resident.add_metric([inst.name, mem.level], mem.resident_mb * _MB)
            if mem.budget_mb is not None:
                budget.add_metric([inst.name, mem.level], mem.budget_mb * _MB)
    yield from (state, level, memory, decision, resident, budget)


def _store(store: StoreFigures, i: str) -> Iterator[Metric]:
    state = GaugeMetricFamily("warmctl_store_state", "1 for the store's state: ok, "
                              "unwritable (writes fail) or stalled (a write does not return)",
                              labels=["instance", "state"])
    for name in ("ok", "unwritable", "stalled"):
        state.add_metric([i, name], 1.0 if store.state == name else 0.0)
    kinds = sorted({*STORE_KINDS, *store.queued, *store.written,
                    *(kind for kind, _ in store.dropped)})
    queued = GaugeMetricFamily(
        "warmctl_store_writes_queued", "Writes queued for the store, per kind (records for "
        "traffic, writes otherwise)", labels=["instance", "kind"])
    written = CounterMetricFamily("warmctl_store_writes", "Queued writes the store took, per "
                                  "kind (records for traffic)", labels=["instance", "kind"])
    dropped = CounterMetricFamily(
        "warmctl_store_writes_dropped", "Queued writes dropped, per kind and why: full (the "
        "kind's bound was reached), error (can never succeed), stopped (not written within a "
        "clean stop's bound)", labels=["instance", "kind", "reason"])
    for kind in kinds:
        queued.add_metric([i, kind], store.queued.get(kind, 0))
        written.add_metric([i, kind], store.written.get(kind, 0))
        for reason in DROP_REASONS:
            dropped.add_metric([i, kind, reason], store.dropped.get((kind, reason), 0))
    yield from (state, queued, written, dropped)
