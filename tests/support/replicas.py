"""``warmctl serve`` as one control-plane replica of several (``[cluster]``), for the tests
and the leader-kill bench: its own ports and data directory, its log kept, its view of who
leads read from ``/healthz``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from controlplane.triton.process import free_port


class Replica:
    def __init__(self, tmp: Path, name: str, env: dict[str, str]) -> None:
        self.name = name
        admin_port, grpc_port = free_port(), free_port()
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.gateway = f"127.0.0.1:{grpc_port}"
        env = {**env, "WARMCTL_DATA_DIR": str(tmp / name),
               "WARMCTL_ADMIN__PORT": str(admin_port), "WARMCTL_GATEWAY__PORT": str(grpc_port),
               "WARMCTL_GATEWAY__HTTP_PORT": str(free_port()),
               "WARMCTL_CLUSTER__REPLICA": name}
        self.log_path = tmp / f"{name}.log"
        self.log = self.log_path.open("wb")
        warmctl = Path(sys.executable).parent / "warmctl"
        self.process = subprocess.Popen([str(warmctl), "serve"], env=env, cwd=tmp,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def health(self) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body: dict[str, Any] = httpx.get(f"{self.admin}/healthz", timeout=2).json()
            return body
        return None

    def cluster(self) -> dict[str, Any]:
        """``detail.cluster`` of its ``/healthz`` (empty while it does not answer)."""
        health = self.health()
        found: dict[str, Any] = {} if health is None else health["detail"].get("cluster", {})
        return found

    def ready(self, model: str) -> bool:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            r = httpx.get(f"{self.admin}/models/{model}", timeout=2)
            return r.status_code == 200 and r.json()["state"] == "ready"
        return False

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
