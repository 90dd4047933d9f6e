"""The CLI's client commands against a stub admin API: error paths end in one line, no traceback."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controlplane.cli import config_file, main
from tests.conftest import ROOT

MODELS = [{"name": f"model_{i:05d}", "state": "cold", "pinned": False, "memory_bytes": None,
           "load_s": None, "reason": None} for i in range(5000)]


#: a model on three instances as the admin API answers a load: the top-level figures are its
#: best replica's (on a), each replica has its own
FLEET_MODEL = {"name": "fleet", "state": "ready", "load_s": 0.4, "replicas": [
    {"instance": "a", "state": "ready", "load_s": 0.4},
    {"instance": "b", "state": "ready", "load_s": 2.25},
    {"instance": "c", "state": "loading", "load_s": None}]}


class _StubAdmin(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        with contextlib.suppress(ConnectionError):  # the client gave up (the timeout test)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/models":
            self._answer(200, json.dumps(MODELS).encode())
        elif self.path == "/readyz":
            self._answer(503, json.dumps({"status": "not ready", "triton": "live"}).encode())
        elif self.path == "/healthz":
            self._answer(200, b'{"status": "ok"}')
        else:  # a proxy in between answering with its own page
            self._answer(502, b"<html>Bad Gateway</html>", "text/html")

    def do_POST(self) -> None:
        if self.path.startswith("/models/fleet/load"):
            self._answer(200, json.dumps(FLEET_MODEL).encode())
            return
        if self.path == "/models/slow/load":
            time.sleep(1.5)  # longer than the client's --timeout
        self._answer(200, json.dumps({"name": "slow", "state": "ready", "load_s": 1.5}).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def admin_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubAdmin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_status_into_a_closed_pipe_ends_quietly(admin_url: str, tmp_path: Path) -> None:
    errors = tmp_path / "stderr"
    # 5000 rows are far more than a pipe buffers, so the write fails while head is gone
    result = subprocess.run(
        f"{sys.executable} -m controlplane.cli status --admin-url {admin_url} "
        f"2>{errors} | head -1", shell=True, cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=True)
    assert result.stdout == "control plane: not ready (triton live)\n"
    assert errors.read_text() == ""


def test_load_that_outlives_the_client_timeout_says_still_loading(
        admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["load", "slow", "--admin-url", admin_url, "--timeout", "0.5"])
    message = str(exited.value.code)
    assert message.startswith("warmctl: model 'slow' is still loading after 0.5s")
    assert "cannot reach" not in message


def test_load_on_one_instance_prints_that_replicas_load_time(
        admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for instance, line in (("b", "fleet: ready on b (load 2.25s)"),
                           ("c", "fleet: loading on c"),  # no load time of its own yet
                           (None, "fleet: ready (load 0.40s)")):
        where = ["--instance", instance] if instance else []
        assert main(["load", "fleet", *where, "--admin-url", admin_url]) == 0
        assert capsys.readouterr().out == line + "\n"


def test_unreachable_admin_api_is_one_line() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", "--admin-url", "http://127.0.0.1:9", "--timeout", "2"])
    assert str(exited.value.code).startswith(
        "warmctl: cannot reach the admin API at http://127.0.0.1:9/models")


def test_an_error_page_that_is_not_json_is_quoted_not_a_traceback(admin_url: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["warmup", "show", "m", "--admin-url", admin_url])
    assert exited.value.code == "warmctl: 502: <html>Bad Gateway</html>"


def test_config_file_explicit_then_environment_then_implicit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WARMCTL_ADMIN_URL", raising=False)
    for name, port in (("warmctl.toml", 9), ("env.toml", 19), ("explicit.toml", 29)):
        (tmp_path / name).write_text(f"[admin]\nport = {port}\n")

    def admin_port(*options: str) -> str:
        with pytest.raises(SystemExit) as exited:
            main([*options, "status", "--timeout", "2"])
        return str(exited.value.code).split("http://127.0.0.1:")[1].split("/")[0]

    monkeypatch.delenv("WARMCTL_CONFIG_FILE", raising=False)
    assert admin_port() == "9"  # ./warmctl.toml when nothing else is said
    monkeypatch.setenv("WARMCTL_CONFIG_FILE", str(tmp_path / "env.toml"))
    assert config_file(None) is None  # load_settings reads the variable itself
    assert admin_port() == "19"  # the variable beats the implicit file
    assert admin_port("--config", "explicit.toml") == "29"  # --config beats both
