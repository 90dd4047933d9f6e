"""A burst of large requests (issue 17): refused past the total bound with a reason naming
the setting, everything else served, and warmctl's memory back near its baseline after.

``warmctl serve`` runs as a process of its own, so its resident memory is measured alone
(``/proc/<pid>/status``); the clients are threads of this test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from controlplane.triton.process import free_port
from tests.support.repository import add_identity

pytestmark = pytest.mark.timeout(240)

MIB = 1 << 20


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_a_burst_past_the_total_bound_is_refused_by_name_and_memory_comes_back(
        tmp_path: Path, repo: Path) -> None:
    add_identity(repo, "ident")
    admin, gateway = free_port(), free_port()
    env = {**os.environ, "WARMCTL_DATA_DIR": str(tmp_path / "data"),
           "WARMCTL_MODEL_REPOSITORY": str(repo), "WARMCTL_ADMIN__PORT": str(admin),
           "WARMCTL_GATEWAY__PORT": str(gateway),
           "WARMCTL_GATEWAY__HTTP_PORT": str(free_port()), "WARMCTL_SCHEDULER__ENABLED": "false",
           # 100 MiB in total: three of the 40 MiB requests below, not four
           "WARMCTL_GATEWAY__MAX_BUFFERED_BYTES": str(100 * MIB)}
    log = open(tmp_path / "warmctl.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"], env=env,
                             stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert serve.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "warmctl.log").read_text()[-2000:]
            time.sleep(0.3)
        url = f"127.0.0.1:{gateway}"
        small = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        small.set_data_from_numpy(np.ones((1, 16), np.float32))
        with grpcclient.InferenceServerClient(url) as client:
            for _ in range(20):
                client.infer("ident", [small], client_timeout=60)
        time.sleep(2)
        baseline = _rss_mib(serve.pid)

        n = 40 * MIB // 4
        data = np.arange(n, dtype=np.float32).reshape(1, n)
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()
        start = threading.Barrier(8)

        def send() -> None:
            big = grpcclient.InferInput("INPUT0", [1, n], "FP32")
            big.set_data_from_numpy(data)
            with grpcclient.InferenceServerClient(url) as c:
                start.wait()
                for _ in range(3):
                    try:
                        result = c.infer("ident", [big], client_timeout=120)
                        out = result.as_numpy("OUTPUT0")
                        key = "ok" if out is not None and out[0, -1] == n - 1 else "wrong"
                    except InferenceServerException as exc:
                        key = f"{exc.status()}: {exc.message()}"
                    with lock:
                        outcomes[key] += 1

        threads = [threading.Thread(target=send) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refused = {k: v for k, v in outcomes.items() if k not in ("ok",)}
        assert outcomes["ok"] > 0 and refused, outcomes  # 8 at once cannot all fit
        for reason in refused:
            assert reason.startswith("StatusCode.RESOURCE_EXHAUSTED: ") and \
                "gateway.max_buffered_bytes (104857600 bytes" in reason, reason
        assert outcomes["ok"] + sum(refused.values()) == 24
        metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
        assert f'warmctl_gateway_refused_requests_total{{bound="max_buffered_bytes"}} ' \
               f'{float(sum(refused.values()))}' in metrics
        assert "warmctl_gateway_buffered_bytes 0.0" in metrics
        # the memory goes back: the cycles holding refused requests collected, glibc's free
        # pages returned. What it guards against held GiBs (3.9 GiB 30 s after such a burst);
        # what stays after the trims is allocator fragmentation and gRPC's buffers, measured
        # at 10-65 MiB over this baseline (the burst moved 24 x 40 MiB each way)
        back = False
        for _ in range(30):
            time.sleep(0.5)
            if _rss_mib(serve.pid) <= baseline + 128:
                back = True
                break
        assert back, (baseline, _rss_mib(serve.pid))
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
        log.close()
