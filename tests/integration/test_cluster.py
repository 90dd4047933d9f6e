"""Two control-plane replicas (``warmctl serve`` processes) on one PostgreSQL, driving one
real tritonserver as a static instance (issue 21).

One replica takes the lease and leads: it loads the pinned model; the other follows, sees the
model ready through Triton's index and serves it through its own gateway; a request for a
cold model through the follower is loaded by the leader (once); a write to the follower is
answered 503 naming the leader. The leader is SIGKILLed under load: the follower leads within
the lease, requests through its gateway keep succeeding, and no model was ever loaded twice
(Triton's own log counts the loads).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from controlplane.triton.process import TritonProcess
from tests.integration.conftest import start_triton
from tests.support.replicas import Replica
from tests.support.repository import add_identity

pytestmark = pytest.mark.timeout(240)

LEASE_S = 3.0


def _wait(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


@pytest.fixture
def triton(tmp_path: Path) -> Iterator[TritonProcess]:
    repo = tmp_path / "repository"
    add_identity(repo, "hot")
    add_identity(repo, "cold")
    process = start_triton(tmp_path, repo)
    yield process
    process.stop()


def _loads(triton: TritonProcess, model: str) -> int:
    """Loads of ``model`` Triton itself logged (whoever asked)."""
    text = triton.log_path.read_text(errors="replace")
    return text.count(f"successfully loaded '{model}'")


def test_the_follower_takes_over_a_killed_leader_under_load_and_nothing_loads_twice(
        tmp_path: Path, triton: TritonProcess, postgres_url: str) -> None:
    env = {**os.environ, "WARMCTL_DATABASE_URL": postgres_url,
           "WARMCTL_MODEL_REPOSITORY": str(triton.model_repository),
           "WARMCTL_TRITON__URL": triton.grpc_url,
           "WARMCTL_TRITON__HTTP_URL": triton.http_url,
           "WARMCTL_TRITON__RECONCILE_INTERVAL_S": "1",
           "WARMCTL_SCHEDULER__ENABLED": "false",
           "WARMCTL_CLUSTER__ENABLED": "true",
           "WARMCTL_CLUSTER__LEASE_S": str(LEASE_S),
           "WARMCTL_MODELS": '{"hot": {"pinned": true}}'}
    env.pop("WARMCTL_CONFIG_FILE", None)
    first = Replica(tmp_path, "r1", env)
    second: Replica | None = None
    try:
        assert _wait(lambda: first.cluster().get("leader") is True, 60), first.health()
        assert _wait(lambda: first.ready("hot"), 60)
        second = Replica(tmp_path, "r2", env)
        follower = second
        assert _wait(lambda: follower.cluster().get("leader_replica") == "r1", 60), \
            follower.health()
        assert follower.cluster()["leader"] is False
        assert _wait(lambda: follower.ready("hot"), 30)  # seen in Triton's index
        # a write to a follower: refused, naming the leader
        refused = httpx.post(f"{follower.admin}/models/hot/unload", timeout=10)
        assert refused.status_code == 503 and "'r1'" in refused.text, refused.text
        assert refused.headers["x-warmctl-leader"] == first.admin
        client = grpcclient.InferenceServerClient(follower.gateway)
        x = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[3.0]], dtype=np.float32))
        # a cold model through the follower: the leader loads it, once
        out = client.infer("cold", [x], client_timeout=60).as_numpy("OUTPUT0")
        assert out is not None and float(out[0][0]) == 3.0

        outcomes: list[tuple[float, str]] = []
        stop = threading.Event()

        def loop() -> None:
            c = grpcclient.InferenceServerClient(follower.gateway)
            while not stop.is_set():
                try:
                    c.infer("hot", [x], client_timeout=30)
                    outcomes.append((time.monotonic(), "ok"))
                except InferenceServerException as exc:
                    outcomes.append((time.monotonic(), str(exc.status())))
                time.sleep(0.01)

        threads = [threading.Thread(target=loop) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        killed_at = time.monotonic()
        first.kill()
        took_over = _wait(lambda: follower.cluster().get("leader") is True, LEASE_S * 4)
        leader_after = time.monotonic() - killed_at
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        assert took_over, follower.health()
        assert leader_after <= LEASE_S + 2, leader_after
        assert outcomes and all(o == "ok" for _, o in outcomes), \
            [o for o in outcomes if o[1] != "ok"][:5]
        assert any(at > killed_at for at, _ in outcomes)
        # the new leader writes
        unloaded = httpx.post(f"{follower.admin}/models/cold/unload", timeout=30)
        assert unloaded.status_code == 200, unloaded.text
        assert _loads(triton, "hot") == 1 and _loads(triton, "cold") == 1
    finally:
        first.close()
        if second is not None:
            second.close()
