"""`warmctl serve` as a user runs it: a subprocess with the example configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from controlplane.triton.process import free_port
from tests.support.repository import add_example, add_identity


def test_serve_starts_pinned_models_and_stops_cleanly(tmp_path: Path, repo: Path) -> None:
    add_example(repo, "thumbnail_scorer")
    add_identity(repo, "ident")
    config = tmp_path / "warmctl.toml"
    port = free_port()
    # a free gateway port too: the gateway refuses a busy one (no SO_REUSEPORT sharing)
    config.write_text(f"[admin]\nport = {port}\n[gateway]\nport = {free_port()}\n"
                      f"http_port = {free_port()}\n"
                      "[models.thumbnail_scorer]\npinned = true\n")
    env = {**os.environ, "WARMCTL_DATA_DIR": str(tmp_path / "state"),
           "WARMCTL_MODEL_REPOSITORY": str(repo)}
    with subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "--config", str(config), "serve"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as serve:
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            ready = None
            while time.monotonic() < deadline:
                try:
                    ready = httpx.get(f"{url}/readyz", timeout=2)
                    if ready.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
            assert ready is not None and ready.status_code == 200
            states = {m["name"]: m["state"] for m in httpx.get(f"{url}/models").json()}
            assert states == {"thumbnail_scorer": "ready", "ident": "cold"}
            triton_pids = subprocess.run(["pgrep", "-P", str(serve.pid), "tritonserver"],
                                         capture_output=True, text=True).stdout.split()
            assert len(triton_pids) == 1
        finally:
            serve.send_signal(signal.SIGTERM)
            output, _ = serve.communicate(timeout=60)
        assert serve.returncode == 0, output
        assert "tritonserver stopped (exit code 0)" in output
        assert not Path(f"/proc/{triton_pids[0]}").exists()
