"""The metric families of one scrape, built from a :class:`Snapshot` (in a worker thread).

Names follow Prometheus' conventions (``warmctl_`` prefix, ``_total`` counters, ``_seconds``
and ``_bytes`` units); every family is labelled by ``instance``, the Triton instance.
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
class Snapshot:
    """Everything one scrape shows, copied on the event loop."""

    requests: dict[tuple[str, str], int]
    cold_starts: dict[str, int]
    waits: dict[str, Histogram]
    #: buffered, dropped, written, unknown-model requests; None without a recorder
    recorder: tuple[int, int, int, int] | None
    events: dict[tuple[str, str, str], int]
    durations: dict[tuple[str, str, str], Histogram]
    phases: dict[str, Histogram]
    actions: dict[tuple[str, str], int]
    #: in-flight requests, open streams; None without a gateway
    gateway: tuple[int, int] | None
    triton_up: bool
    restarts: int
    outages: int
    triton_info: dict[str, str] | None
    status: StatusView


def families(snap: Snapshot, instance: str) -> Iterator[Metric]:
    """Every family of a scrape."""
    yield from _traffic(snap, instance)
    yield from _lifecycle(snap, instance)
    yield from _parts(snap, instance)
    yield from _models(snap.status)


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
        buffered, dropped, written, unknown = snap.recorder
        yield _gauge("warmctl_recorder_buffered_observations",
                     "Requests recorded and not yet flushed to the database", i, buffered)
        for name, help_, value in (
                ("dropped", "Observations dropped because the buffer was full", dropped),
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
    for key, n in sorted(snap.events.items()):
        ops.add_metric([i, *key], n)
        if key in snap.durations:
            _histogram(durations, [i, *key], snap.durations[key])
    phases = HistogramMetricFamily(
        "warmctl_load_phase_duration_seconds",
        "Warm-up and readiness-probe time within successful loads",
        labels=["instance", "phase"])
    for phase, h in snap.phases.items():
        _histogram(phases, [i, phase], h)
    actions = CounterMetricFamily(
        "warmctl_scheduler_actions", "Actions the scheduler took, by kind and outcome",
        labels=["instance", "kind", "outcome"])
    for (kind, outcome), n in sorted(snap.actions.items()):
        actions.add_metric([i, kind, outcome], n)
    yield from (ops, durations, phases, actions)


def _gauge(name: str, help_: str, instance: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_, labels=["instance"])
    family.add_metric([instance], value)
    return family


def _parts(snap: Snapshot, i: str) -> Iterator[Metric]:
    yield InfoMetricFamily("warmctl_build", "warmctl's version", value={"version": __version__})
    if snap.gateway is not None:
        yield _gauge("warmctl_gateway_in_flight_requests",
                     "Unary inference requests being served now", i, snap.gateway[0])
        yield _gauge("warmctl_gateway_open_streams", "Streaming inference calls open now", i,
                     snap.gateway[1])
    yield _gauge("warmctl_triton_up", "1 while Triton serves", i, float(snap.triton_up))
    for name, help_, value in (
            ("restarts", "Restarts of the embedded Triton (a new process came back)",
             snap.restarts),
            ("outages", "Times Triton stopped serving (died, hung, restarted)", snap.outages)):
        family = CounterMetricFamily(f"warmctl_triton_{name}", help_, labels=["instance"])
        family.add_metric([i], value)
        yield family
    if snap.triton_info is not None:
        info = InfoMetricFamily("warmctl_triton", "Where Triton's ports are (scrape its own "
                                "metrics at metrics_url)", labels=["instance"])
        info.add_metric([i], snap.triton_info)
        yield info


def _models(status: StatusView) -> Iterator[Metric]:
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
        for s in ModelState:
            state.add_metric([model.instance, model.name, s.value],
                             1.0 if model.state is s else 0.0)
        for lv in ("gpu", "cpu", "staged", "cold"):
            level.add_metric([model.instance, model.name, lv],
                             1.0 if model.level == lv else 0.0)
        if model.memory_mb is not None:
            memory.add_metric([model.instance, model.name], model.memory_mb * _MB)
        if model.decision is not None:
            decision.add_metric([model.instance, model.name, model.decision], 1.0)
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
