"""Storage faults under load: a full data disk, then a read-only one, with real SQLite.

    sudo .venv/bin/python bench/faults.py [--fault-s 20] [--rate 30] [--threads 3]

The control plane (in process, embedded Triton, the example models) keeps its data directory
on a filesystem the bench mounts (``bench/faultkit.py``; root needed): a small ext4 image,
which one run can fill (disk full) and make immutable (read-only: ``remount,ro`` is refused
while SQLite holds its files open). Client threads send ``shortform_ranker`` requests through
the gateway at a fixed rate throughout. During each fault the bench also lazy-loads a cold
model through the gateway, loads and unloads another through the admin API, and polls
``/healthz``, ``/readyz`` and ``/metrics``. After each fault it measures the time to
``/readyz`` 200, to ``/healthz`` ok and to the scheduler's next successful planning pass. At
the end every record is in the store or counted as dropped: ``lost_uncounted`` is what is
neither. ``--max-buffer 300`` bounds the records held so that a fault drops some (they must
be counted). Prints JSON with a ``targets`` mapping of booleans.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import faultkit
from bench.common import ROOT, machine, sample_inputs
from controlplane.app import ControlPlane
from controlplane.config import load_settings
from controlplane.store.models import RequestRecord
from controlplane.triton.repository import ModelRepository

MODEL, ADMIN = "shortform_ranker", "thumbnail_scorer"
#: the model each fault lazy-loads through the gateway (cold until then)
COLD = {"disk_full": "query_encoder", "read_only": "longform_ranker"}


async def _get(cp: ControlPlane, path: str) -> tuple[int, float, Any]:
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        answer = await http.get(path)
    body = answer.json() if "json" in answer.headers.get("content-type", "") else None
    return answer.status_code, time.monotonic() - t0, body


async def _after(t_end: float, check: Callable[[], Any], limit_s: float = 120) -> float | None:
    """Seconds from ``t_end`` until ``await check()`` holds (None: not within ``limit_s``)."""
    while time.monotonic() - t_end < limit_s:
        if await check():
            return round(time.monotonic() - t_end, 2)
        await asyncio.sleep(0.1)
    return None


async def _fault(cp: ControlPlane, name: str, begin: Callable[[], object],
                 end: Callable[[], object], fault_s: float) -> dict[str, Any]:
    """One fault of ``fault_s``: what worked during it, how long recovery took after."""
    out: dict[str, Any] = {"fault": name, "seconds": fault_s}
    runs_before = cp.loops.status("scheduler").runs
    begin()
    t0, health_seen, ready_503 = time.monotonic(), set(), 0
    slowest: dict[str, float] = {"healthz_s": 0.0, "metrics_s": 0.0}

    async def poll() -> None:
        nonlocal ready_503
        while True:
            _, took, body = await _get(cp, "/healthz")
            if body["status"] == "degraded" and "degraded_after_s" not in out:
                out["degraded_after_s"] = round(time.monotonic() - t0, 2)
            if "degraded_after_s" in out:  # from the fault's detection on
                health_seen.add(body["status"])
            slowest["healthz_s"] = max(slowest["healthz_s"], took)
            _, took, _ = await _get(cp, "/metrics")
            slowest["metrics_s"] = max(slowest["metrics_s"], took)
            ready_503 += (await _get(cp, "/readyz"))[0] != 200
            await asyncio.sleep(0.5)

    poller = asyncio.create_task(poll())
    await asyncio.sleep(2.0)
    cold_t0 = time.monotonic()
    client = faultkit_client(cp)
    cold = COLD[name]
    assert cp.fleet.status(cold).state.value == "cold", cold
    try:
        await asyncio.to_thread(client.infer, cold, sample_inputs(cp.repository.spec(cold)),
                                client_timeout=60)
        out["cold_lazy_load"] = {"ok": True, "s": round(time.monotonic() - cold_t0, 2)}
    except Exception as exc:
        out["cold_lazy_load"] = {"ok": False, "error": str(exc)[:300]}
    finally:
        client.close()
    admin = {}
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=60) as http:
        for action in ("load", "unload"):
            a0 = time.monotonic()
            answer = await http.post(f"/models/{ADMIN}/{action}")
            admin[action] = {"status": answer.status_code, "s": round(time.monotonic() - a0, 2)}
    out["admin"] = admin
    await asyncio.sleep(max(0.0, fault_s - (time.monotonic() - t0)))
    sched = cp.loops.status("scheduler")
    runs_in_fault = sched.runs
    end()
    t_end, ended_at = time.monotonic(), datetime.now(UTC)
    poller.cancel()
    out["healthz_seen_once_degraded"] = sorted(health_seen)
    out["readyz_503_polls"] = ready_503
    out["slowest"] = {k: round(v, 3) for k, v in slowest.items()}
    out["scheduler_passes_during"] = runs_in_fault - runs_before
    readyz, store, healthz, plan = await asyncio.gather(
        _after(t_end, lambda: _code_is(cp, "/readyz", 200)),
        _after(t_end, _async(lambda: cp.store_health.status().state == "ok")),
        _after(t_end, lambda: _health_is(cp, "ok")),
        _after(t_end, _async(lambda: sched.last_ok is not None and sched.last_ok > ended_at
                                     and not sched.failing)))
    out["after_end_s"] = {"readyz_200": readyz, "store_ok": store, "healthz_ok": healthz,
                          "scheduler_pass": plan}
    return out


def faultkit_client(cp: ControlPlane) -> Any:
    import tritonclient.grpc as grpcclient

    assert cp.gateway_url is not None
    return grpcclient.InferenceServerClient(cp.gateway_url)


def _async(check: Callable[[], bool]) -> Callable[[], Any]:
    async def run() -> bool:
        return check()
    return run


async def _code_is(cp: ControlPlane, path: str, code: int) -> bool:
    return (await _get(cp, path))[0] == code


async def _health_is(cp: ControlPlane, status: str) -> bool:
    return bool((await _get(cp, "/healthz"))[2]["status"] == status)


async def run(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    settings = load_settings(
        data_dir=data, model_repository=ROOT / "model_repository",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0}, models={MODEL: {"pinned": True}},
        triton={"stop_timeout_s": 10}, traffic={"max_buffer": args.max_buffer})
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    spec = ModelRepository(ROOT / "model_repository").spec(MODEL)
    inputs = sample_inputs(spec)

    def send(client: Any) -> None:
        client.infer(MODEL, inputs, client_timeout=30)

    load = faultkit.SteadyLoad(send, lambda: faultkit_client(cp), args.rate, args.threads)
    load.start()
    phases = []
    try:
        await asyncio.sleep(args.calm_s)
        filler: list[Path] = []
        phases.append(await _fault(cp, "disk_full", lambda: filler.append(faultkit.fill(data)),
                                   lambda: filler[0].unlink(), args.fault_s))
        await asyncio.sleep(args.calm_s)
        phases.append(await _fault(cp, "read_only", lambda: faultkit.read_only(data),
                                   lambda: faultkit.writable(data), args.fault_s))
        await asyncio.sleep(args.calm_s)
    finally:
        await asyncio.to_thread(load.stop)
    assert cp.recorder is not None
    await cp.recorder.flush()
    await cp.database.writes.drain(60)
    with cp.database.session() as session:
        stored = int(session.scalar(select(func.count()).select_from(RequestRecord)
                                    .where(RequestRecord.model == MODEL)) or 0)
    recorder, writes = cp.recorder, cp.database.writes
    dropped = {"recorder": dict(recorder.dropped_by),
               "store": {f"{k}/{why}": n for (k, why), n in writes.dropped.items()}}
    held = recorder.held
    await cp.stop()
    sent = load.ok + load.failed
    return {"phases": phases, "requests": {"sent": sent, "ok": load.ok, "failed": load.failed,
                                           "errors": load.errors},
            "records": {"stored": stored, "dropped": dropped, "still_held": held,
                        "lost_uncounted": sent - stored - recorder.dropped - held}}


def targets(result: dict[str, Any]) -> dict[str, bool]:
    phases = result["phases"]
    return {
        "no_request_failed": result["requests"]["failed"] == 0,
        "no_record_lost_uncounted": result["records"]["lost_uncounted"] == 0,
        "cold_model_loads_during_faults": all(p["cold_lazy_load"]["ok"] for p in phases),
        "admin_load_unload_answer_200_within_5s": all(
            a["status"] == 200 and a["s"] < 5 for p in phases for a in p["admin"].values()),
        "healthz_degraded_within_5s_and_throughout": all(
            p.get("degraded_after_s", 99) <= 5 and p["healthz_seen_once_degraded"] == ["degraded"]
            for p in phases),
        "healthz_and_metrics_answer_within_1s": all(
            v < 1.0 for p in phases for v in p["slowest"].values()),
        "readyz_200_within_5s_after": all(
            (p["after_end_s"]["readyz_200"] or 99) <= 5 for p in phases),
        "healthz_ok_within_10s_after": all(
            (p["after_end_s"]["healthz_ok"] or 99) <= 10 for p in phases),
        "scheduler_pass_within_6s_after": all(
            (p["after_end_s"]["scheduler_pass"] or 99) <= 6 for p in phases),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault-s", type=float, default=20.0)
    parser.add_argument("--calm-s", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second")
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--max-buffer", type=int, default=200_000,
                        help="traffic.max_buffer: records held at most (small: see drops counted)")
    args = parser.parse_args()
    if (why := faultkit.cannot_mount()) is not None:
        print(json.dumps({"skipped": why}))
        sys.exit(1)
    with tempfile.TemporaryDirectory(prefix="warmctl-faults-") as tmp, \
            faultkit.ext4(Path(tmp) / "data", 256) as data:
        t0 = time.monotonic()
        result = asyncio.run(run(args, data))
    out = {"bench": "faults", "machine": machine(), "seconds": round(time.monotonic() - t0),
           "settings": vars(args), **result}
    out["targets"] = targets(result)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
