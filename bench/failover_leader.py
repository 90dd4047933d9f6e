"""A leader kill (``python bench/failover.py --leader-kill``): two ``warmctl serve`` replicas
on one PostgreSQL drive one tritonserver (a static instance); clients send requests through
both replicas' gateways; the leader is SIGKILLed. Measured: the time until the follower leads
(``/healthz``'s ``detail.cluster``), requests failed through each gateway (the killed one's
clients fail by construction: their gateway is gone; the survivor's must not), and the loads
Triton logged (each model once). PostgreSQL: ``tests/support/postgres.py`` (a throwaway
server, or ``WARMCTL_TEST_POSTGRES_URL``)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.process import TritonProcess
from tests.support import postgres as pg
from tests.support.replicas import Replica
from tests.support.repository import add_identity

ROOT = Path(__file__).resolve().parent.parent


def _until(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def run(lease_s: float = 3.0, before_s: float = 3.0, after_s: float = 5.0) -> dict[str, Any]:
    """The measurement; raises RuntimeError when no PostgreSQL can be had."""
    reason = pg.unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    server = pg.start()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repository"
        add_identity(repo, "hot")
        distribution = TritonDistribution.locate()
        triton = TritonProcess(distribution, repo, distribution.assemble_backend_dir(
            ROOT / "triton_backends", tmp / "backends"), tmp / "triton.log", stop_timeout_s=5)
        import asyncio

        asyncio.run(triton.launch())
        name = server.new_name("bench")
        url = server.create_database(name)
        env = {**os.environ, "WARMCTL_DATABASE_URL": url, "WARMCTL_MODEL_REPOSITORY": str(repo),
               "WARMCTL_TRITON__URL": triton.grpc_url, "WARMCTL_TRITON__HTTP_URL":
               triton.http_url, "WARMCTL_TRITON__RECONCILE_INTERVAL_S": "1",
               "WARMCTL_SCHEDULER__ENABLED": "false", "WARMCTL_CLUSTER__ENABLED": "true",
               "WARMCTL_CLUSTER__LEASE_S": str(lease_s),
               "WARMCTL_MODELS": '{"hot": {"pinned": true}}'}
        env.pop("WARMCTL_CONFIG_FILE", None)
        leader = Replica(tmp, "r1", env)
        follower: Replica | None = None
        try:
            assert _until(lambda: leader.cluster().get("leader") is True, 90), "no leader"
            follower = Replica(tmp, "r2", env)
            survivor = follower
            assert _until(lambda: survivor.cluster().get("leader_replica") == "r1", 90)
            outcomes: dict[str, list[tuple[float, str]]] = {"r1": [], "r2": []}
            stop = threading.Event()
            x = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
            x.set_data_from_numpy(np.array([[1.0]], dtype=np.float32))

            def loop(replica: Replica) -> None:
                c = grpcclient.InferenceServerClient(replica.gateway)
                while not stop.is_set():
                    try:
                        c.infer("hot", [x], client_timeout=10)
                        outcomes[replica.name].append((time.monotonic(), "ok"))
                    except InferenceServerException as exc:
                        outcomes[replica.name].append((time.monotonic(), str(exc.status())))
                    time.sleep(0.01)

            assert _until(lambda: httpx.get(f"{survivor.admin}/models/hot", timeout=2)
                          .json()["state"] == "ready", 60)
            threads = [threading.Thread(target=loop, args=(r,)) for r in (leader, survivor)]
            for t in threads:
                t.start()
            time.sleep(before_s)
            killed = time.monotonic()
            leader.kill()
            led = _until(lambda: survivor.cluster().get("leader") is True, lease_s * 5)
            new_leader_s = time.monotonic() - killed
            time.sleep(after_s)
            stop.set()
            for t in threads:
                t.join()
        finally:
            leader.close()
            if follower is not None:
                follower.close()
            triton.stop()
            server.drop_database(name)
            server.stop()
        loads = triton.log_path.read_text(errors="replace").count("successfully loaded 'hot'")
    r2 = outcomes["r2"]
    failed_r2 = [o for _, o in r2 if o != "ok"]
    return {
        "lease_s": lease_s, "new_leader": led, "new_leader_s": round(new_leader_s, 2),
        "requests": {"survivor": len(r2), "survivor_failed": len(failed_r2),
                     "survivor_after_kill": sum(1 for at, _ in r2 if at > killed),
                     "killed_replica": len(outcomes["r1"]),
                     "killed_replica_failed": sum(1 for _, o in outcomes["r1"] if o != "ok")},
        "triton_loads_of_hot": loads,
        "targets": {"new_leader_within_lease": led and new_leader_s <= lease_s + 1.0,
                    "survivor_zero_failed": not failed_r2,
                    "loaded_once": loads == 1},
    }
