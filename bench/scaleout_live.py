"""The live half of ``bench/scaleout.py``: the open-loop replay, warmctl with its autoscaler
(ours), and a client-side router over plain tritonservers (reactive, unaware)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from bench.common import ROOT
from bench.scaleout import (
    CYCLES,
    LOAD_S,
    MAX_INSTANCES,
    MEASURED_WINDOW_S,
    RATES,
    REPLICA_RATE_PER_S,
    START_INSTANCES,
    Sent,
    TraceConfig,
    Wait,
    build_trace,
    replay_window,
    replicas_wanted,
    spike_window,
    summarize,
    targets,
)
from controlplane.app import ControlPlane
from controlplane.config import load_settings
from controlplane.fleet.states import InstanceState
from controlplane.policy.measured import SeasonalRates
from controlplane.traffic.observation import Observation
from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.process import TritonProcess
from tests.support.repository import add_identity

CLIENTS = 3
TIMEOUT_S = 30.0
#: the autoscaler's and the reactive trigger's pass
INTERVAL_S = 1.0
#: a request: model -> (ok, instance it went to)
Send = Callable[[str], Awaitable[tuple[bool, str | None]]]


@dataclass
class LiveRun:
    requests: list[Sent] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    decision_at: float | None = None
    first_request_at: float | None = None
    added: list[str] = field(default_factory=list)
    instances_max: int = START_INSTANCES
    detail: dict[str, Any] = field(default_factory=dict)


def _inputs() -> list[grpcclient.InferInput]:
    inp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    return [inp]


async def replay(arrivals: Sequence[tuple[float, str]], send: Send, t0: float) -> list[Sent]:
    """Each arrival sent at ``t0 + its time`` (monotonic), in a task of its own."""
    out: list[Sent] = []

    async def one(model: str) -> None:
        sent = time.monotonic()
        ok, instance = await send(model)
        out.append(Sent(model, sent - t0, time.monotonic() - sent, ok, instance))

    tasks = []
    for t, model in arrivals:
        await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
        tasks.append(asyncio.create_task(one(model)))
    await asyncio.gather(*tasks)
    return sorted(out, key=lambda r: r.sent)


def _repository(folder: Path) -> Path:
    repo = folder / "repository"
    for model in RATES:
        add_identity(repo, model, init_sleep_s=str(LOAD_S[model]))
    return repo


# -- ours ---------------------------------------------------------------------------------

async def run_ours(cfg: TraceConfig, arrivals: Sequence[tuple[float, str]],
                   day_one: Sequence[tuple[float, str]], w0: float, folder: Path) -> LiveRun:
    """warmctl's gateway, autoscaler on, forecast injected (see the module docstring)."""
    h = cfg.hour_s
    settings = load_settings(
        data_dir=folder / "state", model_repository=_repository(folder),
        backends_dir=ROOT / "triton_backends", admin={"port": 0},
        gateway={"port": 0, "http_port": 0}, triton={"stop_timeout_s": 5},
        instances={name: {} for name in ("a", "b")},
        models={m: {"pinned": True} for m in RATES},
        fleet={"pinned_replicas": 2, "replica_rate_per_s": REPLICA_RATE_PER_S, "ramp_s": 2,
               "measured_rate_window_s": MEASURED_WINDOW_S},
        # cool-downs and lead compressed with the day (an hour is cfg.hour_s seconds)
        autoscaler={"enabled": True, "min_instances": START_INSTANCES,
                    "max_instances": MAX_INSTANCES, "interval_s": INTERVAL_S,
                    "scale_out_cooldown_s": 2 * h, "scale_in_cooldown_s": 12 * h,
                    "lead_margin_s": 0.8 * h, "default_warm_up_s": 1.2 * h})
    cp = ControlPlane(settings)
    run = LiveRun()
    await cp.start(wait_pinned=True)
    try:
        assert cp.recorder is not None and cp.gateway_url is not None
        t0 = time.monotonic() + 1.0
        e0 = time.time() + 1.0
        seasonal = SeasonalRates(cfg.cycle_s, h, cycles=1)
        for t, m in day_one:
            seasonal.observe(m, e0 + t - w0)

        async def forecast(models: Sequence[str], now: float, horizon_s: float
                           ) -> dict[str, float | None]:
            return {m: seasonal.rate_ahead(m, now, horizon_s) for m in models}
        cp.autoscaler.forecast = forecast

        def cold(o: Observation) -> None:
            if o.cold:
                run.waits.append(Wait(o.model, o.arrived_at - e0, o.instance))
        cp.recorder.on_observation.append(cold)
        ready = {m: sum(1 for s in cp.fleet.replicas(m) if s.state.value == "ready")
                 for m in RATES}
        phases: dict[str, dict[str, float]] = {}
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                now = time.monotonic() - t0
                for e in cp.autoscaler.events:
                    if run.decision_at is None and e.decision.action in (
                            "scale_out", "promote_standby") and e.instances:
                        run.decision_at, run.added = e.decision.at - e0, list(e.instances)
                for name in run.added:
                    rt = cp.fleet.runtimes.get(name) or cp.membership.joining.get(name)
                    if rt is None:
                        continue
                    phases.setdefault(name, {}).setdefault(rt.state.value, round(now, 3))
                    if (run.first_request_at is None and rt.upstream is not None
                            and rt.upstream.requests > 0):
                        run.first_request_at = now
                serving = sum(1 for rt in cp.fleet.order if rt.state is InstanceState.SERVING)
                run.instances_max = max(run.instances_max, serving)
                await asyncio.sleep(0.02)

        clients = [aioclient.InferenceServerClient(cp.gateway_url) for _ in range(CLIENTS)]
        turn = [0]

        async def send(model: str) -> tuple[bool, str | None]:
            turn[0] += 1
            try:
                await clients[turn[0] % CLIENTS].infer(model, _inputs(),
                                                       client_timeout=TIMEOUT_S)
                return True, None
            except InferenceServerException:
                return False, None

        watcher = asyncio.create_task(watch())
        try:
            run.requests = await replay(arrivals, send, t0)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await watcher
            for c in clients:
                await c.close()
        actions = [{"at_s": round(a.at.timestamp() - e0, 3), "kind": a.kind,
                    "model": a.model, "instance": a.instance, "outcome": a.outcome}
                   for a in cp.fleet.actions if a.at.timestamp() >= e0]
        run.detail = {
            "ready_replicas_at_start": ready,
            # when the spiking model was first ready on an added instance (joined with it,
            # or a replica added later)
            "spike_model_ready_on_added_at_s": next(
                (a["at_s"] for a in actions if a["instance"] in run.added
                 and a["kind"] in ("join", "add replica")
                 and not str(a["outcome"]).startswith("failed")
                 and cfg.spike_model in str(a["model"]).split(",")), None),
            "added_instance_phases_s": phases,
            "warm_up_s": [round(v, 3) for v in cp.membership.warm_up_s],
            "scaling": [{"at_s": round(e.decision.at - e0, 3), "action": e.decision.action,
                         "instances": e.instances, "outcome": e.outcome,
                         "reasons": list(e.decision.reasons[:3])}
                        for e in cp.autoscaler.events],
            "fleet_actions": actions,
        }
    finally:
        await cp.stop()
    return run


# -- reactive and unaware: a client-side router over plain tritonservers --------------------

@dataclass
class Backend:
    name: str
    process: TritonProcess
    client: aioclient.InferenceServerClient
    loaded: set[str] = field(default_factory=set)
    loading: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)

    async def load(self, model: str) -> None:
        began = time.monotonic()
        await self.client.load_model(model)
        self.load_s[model] = round(time.monotonic() - began, 3)
        self.loaded.add(model)


async def _start(name: str, repo: Path, folder: Path) -> Backend:
    distribution = TritonDistribution.locate()
    backends = distribution.assemble_backend_dir(ROOT / "triton_backends",
                                                 folder / name / "backends")
    process = TritonProcess(distribution, repo, backends, folder / name / "triton.log",
                            stop_timeout_s=5)
    try:
        await process.launch()
    except BaseException:
        process.stop()
        raise
    return Backend(name, process, aioclient.InferenceServerClient(process.grpc_url))


class Router:
    """Round robin per model over the instances that take it. ``reactive``: the added
    instance takes the models whose rate triggered it; ``unaware``: every model. A model
    not loaded where a request goes is loaded then; the request (and those behind it)
    wait."""

    def __init__(self, mode: str, backends: list[Backend], t0: float) -> None:
        self.mode, self.backends, self.t0 = mode, backends, t0
        self.turn: dict[str, int] = {}
        self.triggered: set[str] = set()
        self.sent: list[tuple[float, str]] = []
        self.run = LiveRun()

    def pool(self, model: str) -> list[Backend]:
        if self.mode == "unaware" or model in self.triggered:
            return self.backends
        return self.backends[:START_INSTANCES]

    async def send(self, model: str) -> tuple[bool, str | None]:
        now = time.monotonic()
        self.sent.append((now, model))
        pool = self.pool(model)
        k = self.turn.get(model, 0)
        self.turn[model] = k + 1
        b = pool[k % len(pool)]
        if b.name not in (x.name for x in self.backends[:START_INSTANCES]) \
                and self.run.first_request_at is None:
            self.run.first_request_at = now - self.t0
        try:
            if model not in b.loaded:
                self.run.waits.append(Wait(model, now - self.t0, b.name))
                task = b.loading.get(model)
                if task is None:
                    task = b.loading[model] = asyncio.create_task(b.load(model))
                await asyncio.shield(task)
            await b.client.infer(model, _inputs(), client_timeout=TIMEOUT_S)
            return True, b.name
        except InferenceServerException:
            return False, b.name

    def behind(self) -> list[str]:
        """Models whose measured rate wants more replicas than there are instances."""
        now = time.monotonic()
        counts: dict[str, int] = {}
        for at, model in reversed(self.sent):
            if at < now - MEASURED_WINDOW_S:
                break
            counts[model] = counts.get(model, 0) + 1
        return sorted(m for m, n in counts.items()
                      if replicas_wanted(n / MEASURED_WINDOW_S) > len(self.backends))

    async def scale(self, repo: Path, folder: Path, stop: asyncio.Event) -> None:
        """The reactive trigger, every ``INTERVAL_S``: the first time a model is behind,
        start a third instance (no model loaded) and route to it once it is live."""
        while not stop.is_set() and len(self.backends) < MAX_INSTANCES:
            await asyncio.sleep(INTERVAL_S)
            behind = self.behind()
            if not behind:
                continue
            self.run.decision_at = time.monotonic() - self.t0
            self.run.added = ["c"]
            backend = await _start("c", repo, folder)
            self.run.detail["live_after_decision_s"] = round(
                time.monotonic() - self.t0 - self.run.decision_at, 3)
            self.run.detail["triggered_by"] = behind
            self.triggered = set(behind)
            self.backends.append(backend)
            self.run.instances_max = len(self.backends)


async def run_router(mode: str, arrivals: Sequence[tuple[float, str]], folder: Path
                     ) -> LiveRun:
    repo = _repository(folder)
    started = await asyncio.gather(*(_start(n, repo, folder) for n in ("a", "b")),
                                   return_exceptions=True)
    backends = [b for b in started if isinstance(b, Backend)]
    try:
        for b in started:
            if isinstance(b, BaseException):
                raise b
        await asyncio.gather(*(b.load(m) for b in backends for m in RATES))
        t0 = time.monotonic() + 1.0
        router = Router(mode, list(backends), t0)
        stop = asyncio.Event()
        scaler = asyncio.create_task(router.scale(repo, folder, stop))
        try:
            requests = await replay(arrivals, router.send, t0)
        finally:
            stop.set()
            await scaler
        backends = router.backends
        run = router.run
        run.requests = requests
        run.detail["loads_on_added_s"] = {b.name: b.load_s for b in backends[START_INSTANCES:]}
        return run
    finally:
        for b in backends:
            await b.client.close()
            b.process.stop()


async def run_all(cfg: TraceConfig, scratch: Path) -> dict[str, Any]:
    """Each strategy on the same replayed window; figures, targets, details."""
    trace = build_trace(cfg)
    w0, w1 = replay_window(cfg)
    s0, s1 = spike_window(cfg)
    replay = [(t - w0, m) for t, m in trace if w0 <= t < w1]
    day_one = [(t, m) for t, m in trace if t < cfg.cycle_s]
    rel_spike = (s0 - w0, s1 - w0)
    steady = (2.0, rel_spike[0])  # the first 2 s settle the clients
    results, detail = {}, {}
    for name in ("ours", "reactive", "unaware"):
        started = time.monotonic()
        if name == "ours":
            run = await run_ours(cfg, replay, day_one, w0, scratch / name)
        else:
            run = await run_router(name, replay, scratch / name)
        results[name] = summarize(run.requests, run.waits, steady=steady, spike=rel_spike,
                                  decision_at=run.decision_at,
                                  first_request_at=run.first_request_at, added=run.added,
                                  instances_max=run.instances_max, spike_start=rel_spike[0],
                                  load_s=LOAD_S)
        detail[name] = {**run.detail, "took_s": round(time.monotonic() - started, 1)}
    return {
        "trace": {"cycle_s": cfg.cycle_s, "cycles": CYCLES, "seed": cfg.seed,
                  "requests": len(trace), "replayed": len(replay), "models": cfg.rates,
                  "spike_model": cfg.spike_model, "spike_rate_per_s": cfg.spike_rate_per_s,
                  "spike_s": [round(v, 2) for v in rel_spike],
                  "steady_s": [round(v, 2) for v in steady],
                  "window_s": [round(w0, 2), round(w1, 2)], "load_s": LOAD_S,
                  "replica_rate_per_s": REPLICA_RATE_PER_S},
        "results": results, "targets": targets(results), "detail": detail,
    }
