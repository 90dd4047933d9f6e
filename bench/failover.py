"""Failover: steady load over 3 embedded Tritons; a replica trimmed, an instance drained,
then one of them killed (SIGKILL) mid-run.

    python bench/failover.py [--clients 8] [--rate 100] [--before-s 20] [--phase-s 5]
                             [--after-s 30]

Small Python-backend models (no torch): ``hot`` is pinned, so it has replicas on two
instances; ``solo_a`` and ``solo_b`` (slower loads) are loaded on one of those two only, and
``bystander`` on another. ``--clients`` tasks send requests through the gateway at ``--rate``
requests/s in all (70 % to ``hot``) for ``--before-s``. Then, under the same load: a second
replica of ``bystander`` is added and, ``--phase-s`` later, trimmed (as the replica placer
trims a surplus one); the instance holding ``bystander`` is drained (its models made ready
elsewhere first), then resumed; for each, the requests that failed and those that waited for
a load (the recorder's cold requests) while it ran and ``--phase-s`` after (targets 0 and 0).
Last, the instance holding ``hot``, ``solo_a`` and ``solo_b`` has its tritonserver killed and
the load goes on for ``--after-s``.

Prints JSON: requests and failures by gRPC status; failures beyond those in flight on the
killed instance at the kill (a failure is excused only if it was sent before the kill plus
``--epsilon-ms`` and still running at the kill, and at most as many as the instance had in
flight); per model of the dead instance, the time from the kill until a request sent after the
kill is answered OK; latency p99 of the ``--after-s`` after the kill over the ``--before-s``
before; each model's load-to-ready (the lifecycle's own figure); and the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine, percentile
from controlplane.app import ControlPlane
from controlplane.config import load_settings
from controlplane.fleet.fleet import REPLICA_TRIGGER, FleetAction
from controlplane.lifecycle.states import ModelState
from controlplane.traffic.observation import Observation
from tests.support.repository import add_identity

INSTANCES = ("a", "b", "c")
#: model -> share of requests; init_sleep_s makes the solo models' loads measurable
MODELS = {"hot": 0.7, "solo_a": 0.1, "solo_b": 0.1, "bystander": 0.1}
INIT_SLEEP_S = {"solo_a": "0.5", "solo_b": "1.0"}


@dataclass(frozen=True)
class Request:
    model: str
    sent: float  # time.monotonic() seconds
    done: float
    status: str  # "OK" or the gRPC status name


@dataclass(frozen=True)
class Kill:
    at: float  # time.monotonic() just before the signal
    instance: str
    in_flight: int  # requests outstanding on it then (the gateway's count)
    models: dict[str, int]  # model on it -> its ready replicas fleet-wide then


def summarize(requests: Sequence[Request], kill: Kill, *, before_s: float, after_s: float,
              epsilon_s: float, load_s: dict[str, float]) -> dict[str, Any]:
    """The report's figures from the client's records (pure; seconds in, seconds out).

    ``load_s``: each model's load-to-ready; a model of the dead instance missing from it is
    held to the 2 s slack alone.
    """
    failed = [r for r in requests if r.status != "OK"]
    in_flight_failed = sum(1 for r in failed
                           if r.sent <= kill.at + epsilon_s and r.done >= kill.at)
    excused = min(in_flight_failed, kill.in_flight)
    served_again: dict[str, float | None] = {}
    for model in kill.models:
        ok = [r.done for r in requests
              if r.model == model and r.status == "OK" and r.sent >= kill.at]
        served_again[model] = round(min(ok) - kill.at, 4) if ok else None
    before = _latencies(requests, kill.at - before_s, kill.at)
    after = _latencies(requests, kill.at, kill.at + after_s)
    p99_before = percentile(before, 99) if before else None
    p99_after = percentile(after, 99) if after else None
    by_model: dict[str, list[Request]] = {}
    for r in requests:
        by_model.setdefault(r.model, []).append(r)
    replicated = sorted(m for m, n in kill.models.items() if n >= 2)
    others = sorted(m for m, n in kill.models.items() if n < 2)
    limits = {m: 1.0 for m in replicated} | {m: load_s.get(m, 0.0) + 2.0 for m in others}
    return {
        "requests": {"total": len(requests), "ok": len(requests) - len(failed),
                     "failed_by_status": dict(Counter(r.status for r in failed))},
        "killed": {"instance": kill.instance, "in_flight_at_kill": kill.in_flight,
                   "failed_in_flight_at_kill": in_flight_failed,
                   "failed_sent_after_kill": sum(1 for r in failed
                                                 if r.sent > kill.at + epsilon_s),
                   "lost_beyond_in_flight": len(failed) - excused,
                   "models": kill.models},
        "served_again_s": served_again,
        "served_again_limit_s": {m: round(v, 4) for m, v in limits.items()},
        "latency_ms": {
            "before": _ms(before), "after": _ms(after),
            "p99_ratio_after_before": (round(p99_after / p99_before, 3)
                                       if p99_before and p99_after else None),
            # the solo models' first requests after the kill wait for their failover load
            "by_model": {m: {"before": _ms(_latencies(by_model[m], kill.at - before_s,
                                                      kill.at)),
                             "after": _ms(_latencies(by_model[m], kill.at,
                                                     kill.at + after_s))}
                         for m in sorted(by_model)}},
        "targets": {
            "no_request_lost_beyond_in_flight": len(failed) == excused,
            "replicated_served_again_within_1s": all(
                _within(served_again[m], limits[m]) for m in replicated),
            "others_served_again_within_load_plus_2s": all(
                _within(served_again[m], limits[m]) for m in others),
        },
    }


@dataclass(frozen=True)
class Phase:
    """A fleet operation under load: when it ran (monotonic and epoch seconds)."""

    name: str
    start: float
    end: float
    start_epoch: float
    end_epoch: float


def phase_figures(phase: Phase, requests: Sequence[Request],
                  cold_epochs: Sequence[float], settle_s: float) -> dict[str, Any]:
    """Requests sent while ``phase`` ran or within ``settle_s`` after it: how many, how many
    failed (by status), how many waited for a load (``cold_epochs``: the arrival times, epoch
    seconds, of the requests the recorder saw wait for their model)."""
    sent = [r for r in requests if phase.start <= r.sent <= phase.end + settle_s]
    failed = [r for r in sent if r.status != "OK"]
    waited = [t for t in cold_epochs
              if phase.start_epoch <= t <= phase.end_epoch + settle_s]
    return {"took_s": round(phase.end - phase.start, 3), "requests": len(sent),
            "failed": len(failed), "failed_by_status": dict(Counter(r.status for r in failed)),
            "waited_for_load": len(waited),
            "latency_ms": _ms(_latencies(sent, phase.start, phase.end + settle_s))}


def actions_since(actions: Iterable[FleetAction], epoch: float) -> list[dict[str, Any]]:
    """The fleet's actions at or after ``epoch`` (``time.time()`` seconds), in order, each
    with its seconds after ``epoch``. ``FleetAction.at`` is a timezone-aware datetime, so it
    is turned into epoch seconds before the comparison (a datetime and a float do not
    compare)."""
    found = []
    for a in actions:
        after_s = a.at.timestamp() - epoch
        if after_s >= 0:
            found.append({"after_s": round(after_s, 3), "kind": a.kind, "model": a.model,
                          "instance": a.instance, "outcome": a.outcome})
    return found


def _within(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def _latencies(requests: Iterable[Request], start: float, end: float) -> list[float]:
    return [r.done - r.sent for r in requests if r.status == "OK" and start <= r.sent < end]


def _ms(latencies: Sequence[float]) -> dict[str, float] | None:
    if not latencies:
        return None
    return {"n": len(latencies), "p50": round(percentile(latencies, 50) * 1e3, 2),
            "p99": round(percentile(latencies, 99) * 1e3, 2)}


async def _client(url: str, seed: int, interval_s: float, timeout_s: float,
                  stop: asyncio.Event, out: list[Request]) -> None:
    """Requests at a steady pace (no catching up after a slow one), models by MODELS' shares."""
    rng = random.Random(seed)
    names, weights = list(MODELS), list(MODELS.values())
    client = aioclient.InferenceServerClient(url)
    data = np.ones((1, 4), dtype=np.float32)
    try:
        next_at = time.monotonic() + rng.uniform(0, interval_s)
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            model = rng.choices(names, weights)[0]
            inp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
            inp.set_data_from_numpy(data)
            sent = time.monotonic()
            try:
                await client.infer(model, [inp], client_timeout=timeout_s)
                status = "OK"
            except InferenceServerException as exc:
                status = str(exc.status() or "CLIENT_ERROR").removeprefix("StatusCode.")
            out.append(Request(model, sent, time.monotonic(), status))
            next_at = max(next_at + interval_s, time.monotonic())
    finally:
        await client.close()


def _ready_on(cp: ControlPlane, model: str) -> list[str]:
    return sorted(s.instance for s in cp.fleet.replicas(model) if s.state is ModelState.READY)


def _load_s(cp: ControlPlane) -> dict[str, dict[str, float | None]]:
    """Model -> instance -> load-to-ready of its last successful load there."""
    return {m: {s.instance: s.load_s for s in cp.fleet.replicas(m)} for m in MODELS}


try:
    from controlplane.fleet.drain import drain, resume
except ImportError:  # before issue 16 the drain lived in failover.py
    from controlplane.fleet.failover import drain, resume  # type: ignore[attr-defined,no-redef]


async def _trim(cp: ControlPlane, instance: str, model: str) -> None:
    """What the replica placer does to a surplus replica. Before issue 16 (no removal
    module) it unloaded it at once: the bench runs on that code too, for the comparison."""
    try:
        from controlplane.fleet.removal import remove_replica
    except ImportError:
        await cp.fleet.unload(model, trigger=REPLICA_TRIGGER, instance=instance, force=True)
        return
    await remove_replica(cp.fleet, cp.fleet.runtimes[instance], model, trigger=REPLICA_TRIGGER)


async def _trim_and_drain(cp: ControlPlane, spare: str, victim: str,
                          phase_s: float) -> list[Phase]:
    """Under the clients' load: a second replica of ``bystander`` added on the instance that
    is neither ``spare`` nor ``victim``, then trimmed; ``spare`` drained and resumed (its
    replica of ``hot`` loaded again after, as the replica placer would)."""
    other = next(n for n in INSTANCES if n not in (spare, victim))
    await cp.fleet.load("bystander", trigger="replica", instance=other)
    await asyncio.sleep(phase_s)  # traffic reaches both replicas
    phases = []
    t0, e0 = time.monotonic(), time.time()
    await _trim(cp, other, "bystander")
    phases.append(Phase("trim", t0, time.monotonic(), e0, time.time()))
    await asyncio.sleep(phase_s)
    had_hot = spare in _ready_on(cp, "hot")
    t0, e0 = time.monotonic(), time.time()
    await drain(cp.fleet, spare)
    phases.append(Phase("drain", t0, time.monotonic(), e0, time.time()))
    await asyncio.sleep(phase_s)
    resume(cp.fleet, spare)
    if had_hot:
        await cp.fleet.load("hot", trigger="replica", instance=spare)
    await asyncio.sleep(1.0)
    return phases


async def run(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    repo = state / "repository"
    for model in MODELS:
        params = {"init_sleep_s": INIT_SLEEP_S[model]} if model in INIT_SLEEP_S else {}
        add_identity(repo, model, **params)
    settings = load_settings(
        data_dir=state / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0},
        instances={name: {} for name in INSTANCES},
        # one replica per model unless pinned: the solo models stay unreplicated
        fleet={"pinned_replicas": 2, "replica_rate_per_s": args.replica_rate},
        models={"hot": {"pinned": True}})
    cp = ControlPlane(settings)
    notes: list[str] = []
    await cp.start(wait_pinned=True)
    try:
        hot = _ready_on(cp, "hot")
        for name in INSTANCES:  # a start-up replica load that failed: the operator's retry
            if len(hot) >= 2:
                break
            if name not in hot:
                await cp.fleet.load("hot", trigger="api", instance=name)
                notes.append(f"hot: second replica loaded by the bench on {name}")
                hot = _ready_on(cp, "hot")
        victim, spare = hot[0], next(n for n in INSTANCES if n != hot[0])
        for model in ("solo_a", "solo_b"):
            await cp.fleet.load(model, trigger="api", instance=victim)
        await cp.fleet.load("bystander", trigger="api", instance=spare)
        placed = {m: _ready_on(cp, m) for m in MODELS}
        setup_load_s = _load_s(cp)
        assert cp.gateway_url is not None

        requests: list[Request] = []
        cold_epochs: list[float] = []  # arrival (epoch) of each request that waited for a load
        assert cp.recorder is not None
        cp.recorder.listeners.append(lambda batch: cold_epochs.extend(
            o.arrived_at for o in batch if isinstance(o, Observation) and o.cold))
        stop = asyncio.Event()
        interval = args.clients / args.rate
        clients = [asyncio.create_task(_client(cp.gateway_url, seed, interval, args.timeout_s,
                                               stop, requests))
                   for seed in range(args.clients)]
        await asyncio.sleep(args.warmup_s + args.before_s)
        phases = await _trim_and_drain(cp, spare, victim, args.phase_s)

        runtime = cp.fleet.runtimes[victim]
        assert runtime.instance is not None and runtime.instance.process is not None
        pid = runtime.instance.process.pid
        assert pid is not None, f"instance {victim} has no running tritonserver"
        models = {m: len(on) for m, on in ((m, _ready_on(cp, m)) for m in MODELS)
                  if victim in on}
        kill = Kill(time.monotonic(), victim, runtime.outstanding, models)
        kill_epoch = time.time()
        os.kill(pid, signal.SIGKILL)
        out_s = back_s = None  # out of routing; routable again (restarted)
        while (elapsed := time.monotonic() - kill.at) < args.after_s:
            if out_s is None and not runtime.routable:
                out_s = round(elapsed, 3)
            elif out_s is not None and back_s is None and runtime.routable:
                back_s = round(elapsed, 2)
            await asyncio.sleep(0.01 if out_s is None else 0.1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), args.timeout_s + 5)
        await cp.recorder.flush()
        final_load_s = _load_s(cp)
        final = {m: _ready_on(cp, m) for m in MODELS}
        # what the fleet did on its own after the kill (failover loads, replicas), in order
        actions = actions_since(cp.fleet.actions, kill_epoch)
    finally:
        await cp.stop()

    # a model's load-to-ready: the longest of its measured loads before the kill
    measured = {m: max((v for v in by.values() if v is not None), default=0.0)
                for m, by in setup_load_s.items()}
    report = summarize(requests, kill, before_s=args.before_s, after_s=args.after_s,
                       epsilon_s=args.epsilon_ms / 1e3, load_s=measured)
    report["killed"] |= {"out_of_routing_after_s": out_s, "routable_again_after_s": back_s}
    for phase in phases:
        figures = phase_figures(phase, requests, cold_epochs, args.phase_s)
        report[phase.name] = figures
        report["targets"][f"{phase.name}_failed_none"] = figures["failed"] == 0
        report["targets"][f"{phase.name}_waited_for_load_none"] = figures["waited_for_load"] == 0
    report["placement"] = {"before": placed, "after": final, "fleet_actions": actions,
                           "setup_notes": notes}
    report["load_to_ready_s"] = {"before_kill": setup_load_s, "at_end": final_load_s}
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s, all clients")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="load not measured")
    parser.add_argument("--before-s", type=float, default=20.0)
    parser.add_argument("--phase-s", type=float, default=5.0,
                        help="load between the trim, the drain and the kill")
    parser.add_argument("--after-s", type=float, default=30.0)
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per request")
    parser.add_argument("--epsilon-ms", type=float, default=5.0,
                        help="a failure sent this soon after the kill may still be in flight")
    parser.add_argument("--replica-rate", type=float, default=1000.0,
                        help="fleet.replica_rate_per_s (high: forecasts add no replicas)")
    parser.add_argument("--leader-kill", action="store_true",
                        help="instead: two control-plane replicas on PostgreSQL, the leader "
                             "SIGKILLed (bench/failover_leader.py)")
    parser.add_argument("--lease-s", type=float, default=3.0, help="with --leader-kill")
    args = parser.parse_args()
    if args.leader_kill:
        from bench.failover_leader import run as leader_kill

        report = await asyncio.to_thread(leader_kill, args.lease_s)
        print(json.dumps({"bench": "failover-leader", "machine": machine(), **report},
                         indent=2))
        return
    if args.clients < 1 or args.rate <= 0:
        parser.error("--clients and --rate must be positive")
    with tempfile.TemporaryDirectory() as tmp:
        report = await run(args, Path(tmp))
    print(json.dumps({"bench": "failover", "machine": machine(),
                      "args": vars(args), **report}, indent=2))


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())  # the loop `warmctl serve` runs the gateway on
