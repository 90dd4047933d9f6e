"""The metric families of one scrape, built from a :class:`Snapshot` (in a worker thread).

Names follow Prometheus' conventions (``warmctl_`` prefix, ``_total`` counters, ``_seconds``
and ``_bytes`` units). Labels:

- ``triton_instance``: the Triton instance of the fleet a per-instance figure is about
  (lifecycle, Triton, replicas' states and memory, requests in flight, the fleet's actions).
- Figures of the control plane as a whole (gateway traffic, the recorder, scheduler actions,
  plan decisions) carry no label for it: one control plane is one scrape target, and
  Prometheus itself labels every series with the target (``instance``, ``job``, and whatever
  target labels the scrape config adds). A label of ours repeating that would only be
  redundant.
- Never ``instance`` or ``job``: Prometheus sets those to the scrape target's, renaming a
  scraped one to ``exported_instance`` (unless ``honor_labels``, where ours would replace the
  target's and two control planes' series would collide).

``docs/metrics.md`` lists the families and a scrape config.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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
    #: open sequences of stateful models held there (a drain waits for them)
    sequences: int = 0
    #: inference requests the gateway sent to it since start
    requests: int = 0
    #: model -> (warm-up probes sent, failed) in its newest successful load here
    probes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: provisioning, warming, standby, serving, draining, down, restarting (``fleet/states``)
    state: str = "serving"
    #: model -> why its replica here failed its health check (``fleet/health.py``)
    unhealthy: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayFigures:
    in_flight: int
    open_streams: int
    #: request bytes held now, across requests and streams
    buffered_bytes: int
    #: bound (setting name) -> requests refused by it
    refused: dict[str, int] = field(default_factory=dict)
    #: models quarantined because their requests crashed a Triton
    quarantined: tuple[str, ...] = ()
    #: gateway worker processes: (configured, alive, replaced since start); None: none
    workers: tuple[int, int, int] | None = None


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
    #: None without a gateway
    gateway: GatewayFigures | None
    instances: list[InstanceFigures]
    #: (instance, kind, outcome) -> what the fleet did on its own (replicas, failover, drain)
    fleet_actions: dict[tuple[str, str, str], int]
    status: StatusView
    store: StoreFigures | None = None


#: the label of per-Triton-instance figures (never ``instance``: see the module's doc)
INSTANCE_LABEL = "triton_instance"


def families(snap: Snapshot) -> Iterator[Metric]:
    """Every family of a scrape."""
    yield from _traffic(snap)
    yield from _lifecycle(snap)
    yield from _parts(snap)
    yield from _models(snap.status)
    yield from _probes(snap)
    if snap.store is not None:
        yield from _store(snap.store)


def _histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    family.add_metric(labels, h.buckets(), h.total)


def _traffic(snap: Snapshot) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "warmctl_requests", "Inference requests through the gateway, by outcome (OK or the "
        "gRPC status name); counted when the recorder flushes",
        labels=["model", "outcome"])
    for (model, outcome), n in sorted(snap.requests.items()):
        requests.add_metric([model, outcome], n)
    cold = CounterMetricFamily(
        "warmctl_cold_starts", "Requests that arrived while their model was not ready",
        labels=["model"])
    for model, n in sorted(snap.cold_starts.items()):
        cold.add_metric([model], n)
    wait = HistogramMetricFamily(
        "warmctl_lazy_load_wait_seconds", "Time cold requests waited for their model",
        labels=["model"])
    for model, h in sorted(snap.waits.items()):
        _histogram(wait, [model], h)
    yield from (requests, cold, wait)
    if snap.recorder is not None:
        held, dropped, written, unknown = snap.recorder
        yield GaugeMetricFamily("warmctl_recorder_buffered_observations",
                                "Requests recorded and not yet written to the database "
                                "(buffered, or queued while the store refuses writes)",
                                value=held)
        lost = CounterMetricFamily(
            "warmctl_recorder_dropped", "Observations dropped, by why: full (max_buffer held: "
            "the store fell behind or refuses writes), error (the store can never take the "
            "batch), stopped (not written within a clean stop's bound)",
            labels=["reason"])
        for reason in DROP_REASONS:
            lost.add_metric([reason], dropped.get(reason, 0))
        yield lost
        for name, help_, value in (
                ("written", "Observations written to the database", written),
                ("unknown_model", "Requests for names not in the repository (not stored)",
                 unknown)):
            yield CounterMetricFamily(f"warmctl_recorder_{name}", help_, value=value)


def _lifecycle(snap: Snapshot) -> Iterator[Metric]:
    labels = [INSTANCE_LABEL, "action", "trigger", "outcome"]
    ops = CounterMetricFamily(
        "warmctl_model_operations", "Finished loads, reloads and unloads", labels=labels)
    durations = HistogramMetricFamily(
        "warmctl_model_operation_duration_seconds",
        "Duration of loads (to ready, warm-up and probes included), reloads and unloads",
        labels=labels)
    phases = HistogramMetricFamily(
        "warmctl_load_phase_duration_seconds",
        "Warm-up and readiness-probe time within successful loads",
        labels=[INSTANCE_LABEL, "phase"])
    for inst in snap.instances:
        for key, n in sorted(inst.events.items()):
            ops.add_metric([inst.name, *key], n)
            if key in inst.durations:
                _histogram(durations, [inst.name, *key], inst.durations[key])
        for phase, h in inst.phases.items():
            _histogram(phases, [inst.name, phase], h)
    actions = CounterMetricFamily(
        "warmctl_scheduler_actions", "Actions the scheduler took, by kind and outcome",
        labels=["kind", "outcome"])
    for (kind, outcome), n in sorted(snap.actions.items()):
        actions.add_metric([kind, outcome], n)
    fleet = CounterMetricFamily(
        "warmctl_fleet_actions", "Replicas added and removed, failovers and drains, by the "
        "instance acted on", labels=[INSTANCE_LABEL, "kind", "outcome"])
    for (name, kind, outcome), n in sorted(snap.fleet_actions.items()):
        fleet.add_metric([name, kind, outcome], n)
    yield from (ops, durations, phases, actions, fleet)


def _per_instance(name: str, help_: str, values: dict[str, float],
                  counter: bool = False) -> Metric:
    family: Metric = (CounterMetricFamily if counter else GaugeMetricFamily)(
        name, help_, labels=[INSTANCE_LABEL])
    for instance, value in values.items():
        family.add_metric([instance], value)  # type: ignore[attr-defined]
    return family


def _parts(snap: Snapshot) -> Iterator[Metric]:
    yield InfoMetricFamily("warmctl_build", "warmctl's version", value={"version": __version__})
    gw = snap.gateway
    if gw is not None:
        yield GaugeMetricFamily("warmctl_gateway_in_flight_requests",
                                "Unary inference requests being served now",
                                value=gw.in_flight)
        yield GaugeMetricFamily("warmctl_gateway_open_streams",
                                "Streaming inference calls open now", value=gw.open_streams)
        yield GaugeMetricFamily("warmctl_gateway_buffered_bytes",
                                "Request bytes the gateway holds now (gateway.max_buffered_bytes "
                                "bounds it)", value=gw.buffered_bytes)
        refused = CounterMetricFamily(
            "warmctl_gateway_refused_requests", "Requests refused at once by a bound on "
            "request bytes (the setting's name)", labels=["bound"])
        for bound, n in sorted(gw.refused.items()):
            refused.add_metric([bound], n)
        yield refused
        if gw.workers is not None:
            configured, alive, restarts = gw.workers
            workers = GaugeMetricFamily(
                "warmctl_gateway_workers", "Gateway worker processes (gateway.workers), "
                "configured and alive now", labels=["state"])
            workers.add_metric(["configured"], configured)
            workers.add_metric(["alive"], alive)
            yield workers
            yield CounterMetricFamily("warmctl_gateway_worker_restarts",
                                      "Gateway worker processes replaced after they exited",
                                      value=restarts)
        quarantined = GaugeMetricFamily(
            "warmctl_model_quarantined", "1 while automatic loads leave the model alone "
            "because its requests crashed a Triton", labels=["model"])
        for model in gw.quarantined:
            quarantined.add_metric([model], 1.0)
        yield quarantined
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
    state = GaugeMetricFamily("warmctl_instance_state", "1 for the instance's state "
                              "(provisioning, warming, standby, serving, draining, down, "
                              "restarting)", labels=[INSTANCE_LABEL, "state"])
    for f in figures:
        state.add_metric([f.name, f.state], 1.0)
    yield state
    yield _per_instance("warmctl_instance_open_sequences",
                        "Open sequences of stateful models held on the instance",
                        {f.name: f.sequences for f in figures})
    info = InfoMetricFamily("warmctl_triton", "Where Triton's ports are (scrape its own "
                            "metrics at metrics_url)", labels=[INSTANCE_LABEL])
    for f in figures:
        if f.triton_info is not None:
            info.add_metric([f.name], f.triton_info)
    if info.samples:
        yield info


def _models(status: StatusView) -> Iterator[Metric]:
    state = GaugeMetricFamily("warmctl_model_state", "1 for the model's lifecycle state",
                              labels=[INSTANCE_LABEL, "model", "state"])
    level = GaugeMetricFamily("warmctl_model_level",
                              "1 for the model's warmth level (gpu, cpu, staged, cold)",
                              labels=[INSTANCE_LABEL, "model", "level"])
    memory = GaugeMetricFamily("warmctl_model_memory_bytes",
                               "Memory the model holds when loaded (measured or assumed)",
                               labels=[INSTANCE_LABEL, "model"])
    decision = GaugeMetricFamily("warmctl_plan_decision", "1 for the plan's decision",
                                 labels=["model", "decision"])
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
            decision.add_metric([model.name, model.decision], 1.0)
    resident = GaugeMetricFamily("warmctl_memory_resident_bytes",
                                 "Memory held by loaded models, per level",
                                 labels=[INSTANCE_LABEL, "level"])
    budget = GaugeMetricFamily("warmctl_memory_budget_bytes",
                               "The budget of each level (absent: unlimited)",
                               labels=[INSTANCE_LABEL, "level"])
    for inst in status.instances:
        for mem in inst.memory:
            resident.add_metric([inst.name, mem.level], mem.resident_mb * _MB)
            if mem.budget_mb is not None:
                budget.add_metric([inst.name, mem.level], mem.budget_mb * _MB)
    yield from (state, level, memory, decision, resident, budget)


def _probes(snap: Snapshot) -> Iterator[Metric]:
    """Warm-up probes of the load each ready replica serves from. Probes never fail a load,
    so a model whose every probe failed is ready (its reason says so): these show it."""
    ready = {(r.instance, m.name) for m in snap.status.models for r in m.instances
             if r.state is ModelState.READY}
    sent = GaugeMetricFamily(
        "warmctl_model_probe_requests",
        "Warm-up probe requests sent in the load the ready replica serves from",
        labels=[INSTANCE_LABEL, "model"])
    failed = GaugeMetricFamily(
        "warmctl_model_probe_failures",
        "Warm-up probe requests that failed in the load the ready replica serves from "
        "(equal to warmctl_model_probe_requests: every probe failed, yet the model serves)",
        labels=[INSTANCE_LABEL, "model"])
    for inst in snap.instances:
        for model, (n, bad) in sorted(inst.probes.items()):
            if (inst.name, model) in ready:
                sent.add_metric([inst.name, model], n)
                failed.add_metric([inst.name, model], bad)
    unhealthy = GaugeMetricFamily(
        "warmctl_replica_unhealthy",
        "1 while the replica failed its health check: no traffic until a probe passes "
        "(the reason is in GET /models/{name})", labels=[INSTANCE_LABEL, "model"])
    for inst in snap.instances:
        for model in sorted(inst.unhealthy):
            unhealthy.add_metric([inst.name, model], 1.0)
    yield from (sent, failed)
    if unhealthy.samples:  # a healthy fleet has no series: alerts match on the 1s
        yield unhealthy


def _store(store: StoreFigures) -> Iterator[Metric]:
    state = GaugeMetricFamily("warmctl_store_state", "1 for the store's state: ok, "
                              "unwritable (writes fail) or stalled (a write does not return)",
                              labels=["state"])
    for name in ("ok", "unwritable", "stalled"):
        state.add_metric([name], 1.0 if store.state == name else 0.0)
    kinds = sorted({*STORE_KINDS, *store.queued, *store.written,
                    *(kind for kind, _ in store.dropped)})
    queued = GaugeMetricFamily(
        "warmctl_store_writes_queued", "Writes queued for the store, per kind (records for "
        "traffic, writes otherwise)", labels=["kind"])
    written = CounterMetricFamily("warmctl_store_writes", "Queued writes the store took, per "
                                  "kind (records for traffic)", labels=["kind"])
    dropped = CounterMetricFamily(
        "warmctl_store_writes_dropped", "Queued writes dropped, per kind and why: full (the "
        "kind's bound was reached), error (can never succeed), stopped (not written within a "
        "clean stop's bound)", labels=["kind", "reason"])
    for kind in kinds:
        queued.add_metric([kind], store.queued.get(kind, 0))
        written.add_metric([kind], store.written.get(kind, 0))
        for reason in DROP_REASONS:
            dropped.add_metric([kind, reason], store.dropped.get((kind, reason), 0))
    yield from (state, queued, written, dropped)
