"""Large requests: the memory warmctl holds during a burst of them and after it.

    python bench/request_memory.py [--size-mb 250] [--clients 8] [--burst-s 20]
                                   [--max-buffered-mb 1024] [--settle-s 30]

``warmctl serve`` runs as a process of its own (its RSS is what is measured, from
/proc/<pid>/status) with one embedded Triton and an identity model. After a few small
requests (the baseline), ``--clients`` threads send ``--size-mb`` requests back to back for
``--burst-s`` (each answered with as many bytes); then nothing for ``--settle-s``. Reported:
RSS at the baseline, its peak (VmHWM) and ``--settle-s`` after the burst, requests served and
refused (by status, and whether the refusal names the setting). With ``--max-buffered-mb`` the
gateway's total bound is set (``gateway.max_buffered_bytes``); 0 leaves the default (a quarter
of the memory). The commit before issue 17 (no total bound) accepts the option and ignores it:
``--compare <checkout>`` runs that checkout's warmctl the same way in the same run.

Targets: peak RSS at most the baseline plus four times the bound (the bound counts a
request and its answer; the process also holds gRPC's receive and send buffers and our copy
of each, up to about three times that, and refused requests are read whole before they are
refused); RSS after the burst within 64 MiB of the baseline; every refusal
RESOURCE_EXHAUSTED and naming its setting.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine
from tests.support.repository import add_identity

MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) // 1024
    return found


def _reset_hwm(pid: int) -> None:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs resets the peak)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _serve(checkout: Path, state: Path, max_buffered_mb: int) -> tuple[subprocess.Popen[bytes],
                                                                       str, str]:
    repo = state / "repository"
    add_identity(repo, "ident")
    admin, gateway = _free_port(), _free_port()
    env = {**os.environ, "WARMCTL_DATA_DIR": str(state / "data"),
           "WARMCTL_MODEL_REPOSITORY": str(repo), "WARMCTL_ADMIN__PORT": str(admin),
           "WARMCTL_GATEWAY__PORT": str(gateway), "WARMCTL_SCHEDULER__ENABLED": "false",
           "PYTHONPATH": str(checkout)}
    config = (checkout / "controlplane" / "config.py").read_text()
    if "http_enabled" in config:  # the HTTP door (issue 19) on a free port too
        env["WARMCTL_GATEWAY__HTTP_PORT"] = str(_free_port())
    # a checkout without the setting (before issue 17) refuses it as an unknown key
    if max_buffered_mb and "max_buffered_bytes" in (checkout / "controlplane" /
                                                    "config.py").read_text():
        env["WARMCTL_GATEWAY__MAX_BUFFERED_BYTES"] = str(max_buffered_mb * MIB)
    python = Path(sys.executable)
    process = subprocess.Popen([str(python), "-m", "controlplane.cli", "serve"], cwd=checkout,
                               env=env, stdout=subprocess.DEVNULL,
                               stderr=open(state / "warmctl.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{admin}/readyz"
    for _ in range(240):
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError((state / "warmctl.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    return process, f"127.0.0.1:{gateway}", url


def measure(checkout: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        process, gateway, _ = _serve(checkout, Path(tmp), args.max_buffered_mb)
        try:
            return _burst(process.pid, gateway, args)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


def _burst(pid: int, gateway: str, args: argparse.Namespace) -> dict[str, Any]:
    client = grpcclient.InferenceServerClient(gateway)
    small = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    small.set_data_from_numpy(np.ones((1, 16), np.float32))
    for _ in range(20):
        client.infer("ident", [small], client_timeout=60)
    time.sleep(2)
    baseline = _rss(pid)["VmRSS"]
    _reset_hwm(pid)
    n = args.size_mb * MIB // 4
    big = grpcclient.InferInput("INPUT0", [1, n], "FP32")
    big.set_data_from_numpy(np.ones((1, n), np.float32))
    outcomes: Counter[str] = Counter()
    named = [0]
    lock = threading.Lock()
    stop = time.monotonic() + args.burst_s

    def send() -> None:
        c = grpcclient.InferenceServerClient(gateway)
        while time.monotonic() < stop:
            try:
                c.infer("ident", [big], client_timeout=120)
                key = "OK"
            except InferenceServerException as exc:
                key = str(exc.status()).removeprefix("StatusCode.")
                with lock:
                    named[0] += "gateway.max_" in (exc.message() or "")
            with lock:
                outcomes[key] += 1

    threads = [threading.Thread(target=send) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = _rss(pid)["VmHWM"]
    time.sleep(args.settle_s)
    after = _rss(pid)["VmRSS"]
    refused = sum(v for k, v in outcomes.items() if k != "OK")
    bound_mb = args.max_buffered_mb or None
    return {
        "rss_mb": {"baseline": baseline, "peak": peak, "after_settle": after},
        "requests": dict(outcomes), "refusals_naming_the_setting": named[0],
        "targets": {
            "peak_within_baseline_plus_four_times_the_bound": (
                bound_mb is not None and peak <= baseline + 4 * bound_mb),
            "back_within_64_mib_of_baseline": after <= baseline + 64,
            "refusals_resource_exhausted_and_named": (
                refused == outcomes.get("RESOURCE_EXHAUSTED", 0) == named[0]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=250)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--burst-s", type=float, default=20.0)
    parser.add_argument("--settle-s", type=float, default=30.0)
    parser.add_argument("--max-buffered-mb", type=int, default=1024,
                        help="gateway.max_buffered_bytes in MiB (0: the default)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another checkout (e.g. the commit before) measured the same way")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    report: dict[str, Any] = {"bench": "request_memory", "machine": machine(),
                              "args": {k: str(v) for k, v in vars(args).items()},
                              "this": measure(root, args)}
    if args.compare is not None:
        report["compare"] = {"checkout": str(args.compare), **measure(args.compare, args)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
