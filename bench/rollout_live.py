"""bench/rollout.py's live part: the control plane, the clients, the hooks, the memory
sampler, one rollout per kind."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from bench.common import ROOT
from bench.rollout import (
    BAD,
    KINDS,
    STEPS,
    Answer,
    MemorySample,
    Move,
    Seen,
    Timeline,
    memory_figures,
    summarize_kind,
)
from controlplane.app import ControlPlane
from controlplane.config import InstanceSettings, Settings, load_settings
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.rollouts.verify import Verdict, VerifyOptions
from controlplane.store.rollouts import RolloutRow
from controlplane.traffic.observation import Observation
from tests.support.versions import add_version

#: share of the requests sent to the model being rolled out (the rest: all five evenly)
FOCUS_SHARE = 0.6
SAMPLE_S = 0.25
STUB = "triton_python_backend_stub"
_INSTANCE = re.compile(r"^(.+)_\d+_\d+$")


def _settings(state: Path, dwell_s: float) -> Settings:
    repo = state / "repository"
    for kind in KINDS:
        add_version(repo, kind, "1")
    models: dict[str, Any] = {k: {"pinned": True, "sample_payloads": True} for k in KINDS}
    models["disagree"]["rollout"] = {"atol": 0.01}
    return load_settings(
        data_dir=state / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0}, scheduler={"enabled": False},
        triton={"stop_timeout_s": 5, "load_timeout_s": 60, "reconcile_interval_s": 1},
        instances={"a": InstanceSettings()},
        traffic={"sample_per_shape": 16, "flush_interval_s": 0.5},
        rollouts={"auto": False, "steps": list(STEPS), "dwell_s": dwell_s, "min_requests": 15},
        models=models)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(name))
    return out


def _label(pid: int, repo: Path) -> str:
    """``tritonserver``, ``stub:<model>/<version>``, or the process's name. A stub's model.py
    lies in the repository, or in Triton's copy of the model (``/tmp/folderXXXXXX/<version>``,
    a load with file overrides): then the model is the one of the instance name it is given
    (``<model>_<group>_<n>``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    if not args or not args[0].endswith(STUB):
        return Path(args[0]).name if args and args[0] else "?"
    path = next((Path(a) for a in args[1:] if a.endswith("model.py")), None)
    if path is None:
        return "stub:?"
    if str(path).startswith(str(repo)):
        return f"stub:{path.parent.parent.name}/{path.parent.name}"
    named = next((m.group(1) for a in args if (m := _INSTANCE.match(a))), "?")
    return f"stub:{named}/{path.parent.name}"


def memory_sample(pid: int, repo: Path) -> MemorySample:
    children = _children()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    by: dict[str, int] = {}
    count: dict[str, int] = {}
    for p in tree:
        key = "tritonserver" if p == pid else _label(p, repo)
        by[key] = by.get(key, 0) + _rss(p)
        count[key] = count.get(key, 0) + 1
    return MemorySample(time.time(), sum(by.values()), by, count)


async def _sampler(cp: ControlPlane, repo: Path, stop: asyncio.Event,
                   out: list[MemorySample]) -> None:
    rt = cp.fleet.runtimes["a"]
    while not stop.is_set():
        process = rt.instance.process if rt.instance is not None else None
        if process is not None and process.pid is not None:
            out.append(await asyncio.to_thread(memory_sample, process.pid, repo))
        await asyncio.sleep(SAMPLE_S)


async def _client(url: str, seed: int, interval_s: float, focus: list[str],
                  stop: asyncio.Event, out: list[Answer]) -> None:
    """Requests at a steady pace (no catching up), inputs 1..9 in turn; each answer's
    version (its VERSION output) and whether OUTPUT0 was 2 x the input."""
    rng = random.Random(seed)
    client = aioclient.InferenceServerClient(url)
    i = seed
    try:
        next_at = time.monotonic() + rng.uniform(0, interval_s)
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            model = focus[0] if rng.random() < FOCUS_SHARE else rng.choice(KINDS)
            i += 1
            x = float(i % 9 + 1)
            inp = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
            inp.set_data_from_numpy(np.array([[x]], dtype=np.float32))
            sent = time.time()
            version: str | None = None
            try:
                result = await client.infer(model, [inp], client_timeout=30)
                y, v = result.as_numpy("OUTPUT0"), result.as_numpy("VERSION")
                version = None if v is None else f"{float(v[0][0]):g}"
                status = "OK" if y is not None and float(y[0][0]) == 2 * x else "WRONG"
            except InferenceServerException as exc:
                status = str(exc.status() or "CLIENT_ERROR").removeprefix("StatusCode.")
            out.append(Answer(model, sent, time.time(), version, status))
            next_at = max(next_at + interval_s, time.monotonic())
    finally:
        await client.close()


def _hook(cp: ControlPlane, timelines: dict[str, Timeline]) -> None:
    """Time every stored move, the verifier's verdict and the decision to roll back."""
    rollouts = cp.rollouts
    save, verifier, roll_back = rollouts.store.save, rollouts.verifier, rollouts._roll_back

    async def saved(row: RolloutRow) -> None:
        if (t := timelines.get(row.model)) is not None:
            t.moves.append(Move(time.time(), row.state, row.step, row.share))
        await save(row)

    async def verify(rt: InstanceRuntime, model: str, active: str, target: str,
                     options: VerifyOptions) -> Verdict:
        verdict = await verifier(rt, model, active, target, options)
        if (t := timelines.get(model)) is not None:
            t.verdict_at, t.verdict_passed = time.time(), verdict.passed
        return verdict

    async def rolled_back(row: RolloutRow, *args: Any, **kwargs: Any) -> None:
        if (t := timelines.get(row.model)) is not None and t.rollback_at is None:
            t.rollback_at = time.time()
        await roll_back(row, *args, **kwargs)

    roll: Callable[..., Awaitable[None]] = rolled_back
    setattr(rollouts.store, "save", saved)  # noqa: B010
    rollouts.verifier = verify
    setattr(rollouts, "_roll_back", roll)  # noqa: B010


async def _rollout(cp: ControlPlane, http: httpx.AsyncClient, kind: str, repo: Path,
                   timelines: dict[str, Timeline], within_s: float = 120.0) -> dict[str, Any]:
    add_version(repo, kind, "2", kind=kind)
    timelines[kind] = timeline = Timeline(kind, time.time())
    started = await http.post(f"/models/{kind}/rollouts", json={"version": "2"})
    if started.status_code != 202:
        return {"state": None, "reason": f"POST {started.status_code}: {started.text[:300]}"}
    deadline = time.monotonic() + within_s
    row: dict[str, Any] = started.json()
    while time.monotonic() < deadline:
        rows = (await http.get(f"/models/{kind}/rollouts")).json()
        row = rows[0]
        if row["state"] in ("promoted", "rolled_back", "aborted") and timeline.end is not None:
            break
        await asyncio.sleep(0.1)
    return row


async def run(args: argparse.Namespace, kinds: list[str], state: Path) -> dict[str, Any]:
    settings = _settings(state, args.dwell_s)
    repo = settings.model_repository
    cp = ControlPlane(settings)
    t0 = time.monotonic()
    await cp.start(wait_pinned=True)
    startup_s = round(time.monotonic() - t0, 2)
    answers: list[Answer] = []
    seen: list[Seen] = []
    samples: list[MemorySample] = []
    timelines: dict[str, Timeline] = {}
    results: dict[str, dict[str, Any]] = {}
    after: dict[str, dict[str, Any]] = {}
    try:
        assert cp.recorder is not None and cp.gateway_url is not None
        cp.recorder.on_observation.append(lambda o: seen.append(Seen(
            o.model, o.arrived_at, o.version, o.outcome, o.cold))
            if isinstance(o, Observation) else None)
        _hook(cp, timelines)
        stop = asyncio.Event()
        focus = [kinds[0]]
        interval = args.clients / args.rate
        tasks = [asyncio.create_task(_client(cp.gateway_url, seed, interval, focus, stop,
                                             answers)) for seed in range(args.clients)]
        tasks.append(asyncio.create_task(_sampler(cp, Path(repo), stop, samples)))
        async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
            for kind in kinds:
                focus[0] = kind
                await asyncio.sleep(args.before_s)  # version 1's payloads are recorded
                row = await _rollout(cp, http, kind, Path(repo), timelines)
                await asyncio.sleep(args.settle_s)
                results[kind] = row
                status = cp.fleet.status(kind)
                after[kind] = {"active": cp.versions.active(kind),
                               "target": cp.versions.target(kind),
                               "loaded_versions": list(status.versions),
                               "split_left": kind in cp.fleet.splits,
                               "plugin_memory_bytes": status.memory_bytes}
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 40)
    finally:
        await cp.stop()

    out: dict[str, dict[str, Any]] = {}
    for kind, row in results.items():
        timeline = timelines[kind]
        end = timeline.end or timeline.start
        mine = [a for a in answers if a.model == kind and timeline.start - args.before_s
                <= a.sent <= end + args.settle_s]
        figures = summarize_kind(timeline, row, mine, [o for o in seen if o.model == kind],
                                 args.settle_s)
        figures["memory"] = memory_figures(samples, timeline, args.before_s,
                                           (end + 0.5, end + args.settle_s), kind)
        figures["after"] = after[kind]
        out[kind] = figures
    windows = [(t.start, (t.end or t.start) + args.settle_s) for t in timelines.values()]
    bystanders = [a for a in answers if any(
        a0 <= a.sent <= a1 and a.model != k for (a0, a1), k in zip(windows, timelines,
                                                                   strict=True))]
    return {"results": out, "startup_s": startup_s,
            "load": {"requests": len(answers), "failed": sum(a.status != "OK" for a in answers),
                     "observed_cold": sum(o.cold for o in seen),
                     "bystanders_during_rollouts": {
                         "requests": len(bystanders),
                         "failed": sum(a.status != "OK" for a in bystanders),
                         "from_version_2_of_bad": sum(a.version == "2" and a.model in BAD
                                                      for a in bystanders)}}}


def run_all(args: argparse.Namespace, kinds: list[str], state: Path) -> dict[str, Any]:
    import uvloop

    return uvloop.run(run(args, kinds, state))
