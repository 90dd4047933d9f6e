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

from controlplane.cli import main
from controlplane.cli_http import config_file
from tests.conftest import ROOT

MODELS = [{"name": f"model_{i:05d}", "state": "cold", "pinned": False, "memory_bytes": None,
           "load_s": None, "reason": None} for i in range(5000)]


#: a model on three instances as the admin API answers a load: the top-level figures are its
#: best replica's (on a), each replica has its own
FLEET_MODEL = {"name": "fleet", "state": "ready", "load_s": 0.4, "replicas": [
    {"instance": "a", "state": "ready", "load_s": 0.4},
    {"instance": "b", "state": "ready", "load_s": 2.25},
    {"instance": "c", "state": "loading", "load_s": None}]}


def _view(name: str, state: str = "provisioning", **values: object) -> dict[str, object]:
    """An InstanceView as the admin API answers one."""
    return {"name": name, "provider": "embedded", "origin": "operator", "url": None,
            "state": state, "state_reason": None, "state_for_s": 0.0, "triton_state": None,
            "reason": None, "routable": state == "serving", "draining": state == "draining",
            "outstanding": 0, "memory_budget_mb": 4096.0, "memory_used_mb": 0.0,
            "cuda_visible_devices": None, "models": {}, "planned": [], "triton": None,
            **values}


SCALING = {"enabled": True, "instances": {"serving": 2, "warming": 1, "standby": 0,
                                          "draining": 0, "provisioning": 0},
           "min_instances": 1, "max_instances": 4, "standby_target": 0, "warm_up_s": None,
           "lead_s": 60.0, "ramps": [],
           "decisions": [{"at": "2024-05-01T08:00:00.123+00:00", "action": "scale_out",
                          "count": 1, "target_instances": 3, "standby_wanted": 0,
                          "reasons": ["forecast 9.0 req/s in 60s needs 3 instances"],
                          "instances": ["auto-1"], "outcome": "started"}]}


def _rollout(rollout_id: int = 7, state: str = "verifying", **values: object) -> dict[str, object]:
    """A RolloutView as the admin API answers one."""
    return {"id": rollout_id, "model": "resnet", "active": "1", "version": "2", "state": state,
            "step": -1, "share": 0.0, "reason": "verifying version 2 on recorded samples",
            "origin": "operator", "options": {"steps": [5, 25, 50, 100], "dwell_s": 60.0},
            "verification": None, "created_at": "2024-05-01T08:00:00+00:00",
            "updated_at": "2024-05-01T08:00:00.250000+00:00", **values}


ROLLOUTS = [
    _rollout(7, "shifting", step=1, share=0.25, reason="step 2/4: 25% of the traffic",
             updated_at="2024-05-01T08:03:10+00:00",
             verification={"passed": True, "reason": "32 samples", "samples": 32,
                           "active_p50_s": 0.0041, "target_p50_s": 0.0043, "failures": []}),
    _rollout(6, "rolled_back", active="1", version="3", origin="auto",
             reason="verification failed: output 'y' differs",
             updated_at="2024-04-30T22:15:00+00:00",
             verification={"passed": False, "reason": "output 'y' differs", "samples": 1,
                           "active_p50_s": 0.004, "target_p50_s": None,
                           "failures": ["output 'y' differs"]})]


def _error(status: int, message: str) -> tuple[int, bytes]:
    """The admin API's JSON error shape."""
    return status, json.dumps({"error": {"code": "conflict", "message": message}}).encode()


class _StubAdmin(BaseHTTPRequestHandler):
    #: (method, path with query, JSON body or None) of each /instances or /scaling call
    calls: list[tuple[str, str, object]] = []
    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        with contextlib.suppress(ConnectionError):  # the client gave up (the timeout test)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _fleet(self, method: str) -> bool:
        """The elastic-fleet routes; False for a path they do not cover."""
        if not self.path.startswith(("/instances", "/scaling")):
            return False
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size)) if size else None
        self.calls.append((method, self.path, body))
        name = self.path.split("?")[0].split("/")[2] if self.path.count("/") > 1 else ""
        status, answer = 200, b""
        if (method, self.path) == ("GET", "/instances"):
            answer = json.dumps([_view("a", "serving"), _view("b", "standby")]).encode()
        elif (method, self.path) == ("GET", "/scaling"):
            answer = json.dumps(SCALING).encode()
        elif method == "POST" and self.path == "/instances":
            assert isinstance(body, dict)
            if body["name"] == "a":
                status, answer = _error(409, "instance 'a' is already in the fleet")
            else:
                status, answer = 202, json.dumps(_view(body["name"])).encode()
        elif method == "DELETE" and name == "a":
            status, answer = _error(409, "instance 'a' is the last one serving: removing it "
                                         "would leave every model unserved (force=true)")
        elif method == "DELETE":
            # the view as it was when the removal was asked: still serving
            status, answer = 202, json.dumps(_view(name, "serving")).encode()
        elif method == "POST" and self.path.endswith("/promote") and name == "b":
            answer = json.dumps(_view("b", "serving")).encode()
        else:
            status, answer = _error(409, f"instance '{name}' is not standby")
        self._answer(status, answer)
        return True

    def _rollouts(self, method: str) -> bool:
        """``/models/{name}/rollouts`` and its actions; False for a path they do not cover."""
        parts = self.path.split("/")  # "", "models", name, "rollouts", id, action
        if len(parts) < 4 or parts[1] != "models" or parts[3] != "rollouts":
            return False
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size)) if size else None
        self.calls.append((method, self.path, body))
        name = parts[2]
        status, answer = 200, b""
        if name == "nope":
            status, answer = _error(404, "model 'nope' is not in the repository")
        elif method == "GET":
            answer = json.dumps([] if name == "fresh" else ROLLOUTS).encode()
        elif len(parts) == 4:
            assert isinstance(body, dict)
            if body["version"] == "9":
                status, answer = _error(400, "resnet has no version folder '9'")
            else:
                status, answer = 202, json.dumps(_rollout(version=body["version"])).encode()
        elif parts[4] == "7":
            state = {"pause": "paused", "resume": "shifting", "promote": "shifting",
                     "abort": "aborted"}[parts[5]]
            answer = json.dumps(ROLLOUTS[0] | {"state": state, "reason": f"{parts[5]} asked"}
                                ).encode()
        else:
            status, answer = _error(409, f"rollout {parts[4]} of '{name}' is not under way")
        self._answer(status, answer)
        return True

    def do_DELETE(self) -> None:
        self._fleet("DELETE")

    def do_GET(self) -> None:
        if self._fleet("GET") or self._rollouts("GET"):
            return
        if self.path == "/models":
            self._answer(200, json.dumps(MODELS).encode())
        elif self.path == "/readyz":
            self._answer(503, json.dumps({"status": "not ready", "triton": "live"}).encode())
        elif self.path == "/healthz":
            self._answer(200, b'{"status": "ok"}')
        else:  # a proxy in between answering with its own page
            self._answer(502, b"<html>Bad Gateway</html>", "text/html")

    def do_POST(self) -> None:
        if self._fleet("POST") or self._rollouts("POST"):
            return
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


@pytest.fixture
def calls() -> list[tuple[str, str, object]]:
    _StubAdmin.calls.clear()
    return _StubAdmin.calls


def test_instances_without_an_action_still_lists(
        admin_url: str, calls: list[tuple[str, str, object]],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["instances", "--admin-url", admin_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[1:]] == [["a", "embedded", "serving"],
                                                      ["b", "embedded", "standby"]]
    assert main(["instances", "--json", "--admin-url", admin_url]) == 0
    assert [i["name"] for i in json.loads(capsys.readouterr().out)] == ["a", "b"]
    assert calls == [("GET", "/instances", None)] * 2


def test_instances_add_sends_the_settings_and_says_how_to_watch(
        admin_url: str, calls: list[tuple[str, str, object]],
        capsys: pytest.CaptureFixture[str]) -> None:
    # --admin-url before the command, as the elastic-fleet integration test calls it
    assert main(["--admin-url", admin_url, "instances", "add", "c",
                 "--set", "memory_budget_mb=4096"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["c", "embedded", "provisioning"]
    assert out[-1] == "c: provisioning; watch it with `warmctl instances`"
    assert main(["instances", "add", "d", "--url", "triton-d:8001", "--standby",
                 "--set", "cuda_visible_devices=1", "--set", "http_url=triton-d:8000",
                 "--set", "gpu_memory_budget_mb=null", "--admin-url", admin_url]) == 0
    assert "warmctl instances promote d" in capsys.readouterr().out
    assert [body for _, _, body in calls] == [
        {"name": "c", "memory_budget_mb": 4096},
        # --url alone means static; a GPU list is text even when it reads as a number
        {"name": "d", "provider": "static", "url": "triton-d:8001",
         "standby": True, "cuda_visible_devices": "1", "http_url": "triton-d:8000",
         "gpu_memory_budget_mb": None}]


def test_instances_add_refused_prints_the_api_message(admin_url: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["instances", "add", "a", "--admin-url", admin_url])
    assert exited.value.code == "warmctl: 409: instance 'a' is already in the fleet"


@pytest.mark.parametrize("setting, error", [
    ("memory_budget_mb", "expected KEY=VALUE"),
    ("provider=static", "provider: give it as --provider"),
    ("name=x", "name: give it as NAME")])
def test_instances_add_bad_set_is_a_usage_error(
        setting: str, error: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["instances", "add", "c", "--set", setting, "--admin-url", "http://127.0.0.1:9"])
    assert exited.value.code == 2
    assert error in capsys.readouterr().err


def test_instances_remove_and_promote(
        admin_url: str, calls: list[tuple[str, str, object]],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["instances", "remove", "b", "--admin-url", admin_url]) == 0
    # not the "serving" of the view the API took before the drain began
    assert capsys.readouterr().out.startswith("b: draining, then retired")
    assert main(["instances", "--admin-url", admin_url, "remove", "c", "--force"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["instances", "remove", "a", "--admin-url", admin_url])
    assert str(exited.value.code).startswith("warmctl: 409: instance 'a' is the last one")
    assert main(["instances", "promote", "b", "--admin-url", admin_url]) == 0
    assert capsys.readouterr().out == "b: serving, takes traffic now\n"
    with pytest.raises(SystemExit) as exited:
        main(["instances", "promote", "a", "--admin-url", admin_url])
    assert exited.value.code == "warmctl: 409: instance 'a' is not standby"
    assert [(m, p) for m, p, _ in calls] == [
        ("DELETE", "/instances/b"), ("DELETE", "/instances/c?force=true"),
        ("DELETE", "/instances/a"), ("POST", "/instances/b/promote"),
        ("POST", "/instances/a/promote")]


def test_scaling_summary_and_json(admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scaling", "--admin-url", admin_url]) == 0
    out = capsys.readouterr().out
    assert "instances: 2 serving, 1 warming, 0 standby, 0 draining, 0 provisioning" in out
    assert "      forecast 9.0 req/s in 60s needs 3 instances" in out.splitlines()
    assert main(["scaling", "--json", "--admin-url", admin_url]) == 0
    assert json.loads(capsys.readouterr().out) == SCALING


@pytest.fixture
def utc_plus_2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The local zone is UTC+2 (a POSIX TZ needs no zone database)."""
    monkeypatch.setenv("TZ", "XXX-2")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_rollout_start_says_how_to_watch(
        admin_url: str, calls: list[tuple[str, str, object]],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollout", "start", "resnet", "2", "--admin-url", admin_url]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "resnet: rollout 7 1→2 verifying, step 0/4 (0% of the traffic): verifying version 2 "
        "on recorded samples",
        "  watch it with `warmctl rollout status resnet`"]
    # the global options before the command, --json before the action
    assert main(["--admin-url", admin_url, "rollout", "--json", "start", "resnet", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == _rollout()
    assert calls == [("POST", "/models/resnet/rollouts", {"version": "2"})] * 2


@pytest.mark.parametrize("argv, message", [
    (["start", "resnet", "9"], "warmctl: 400: resnet has no version folder '9'"),
    (["start", "nope", "2"], "warmctl: 404: model 'nope' is not in the repository"),
    (["status", "nope"], "warmctl: 404: model 'nope' is not in the repository"),
    (["pause", "resnet", "6"], "warmctl: 409: rollout 6 of 'resnet' is not under way")])
def test_rollout_refused_prints_the_api_message(
        admin_url: str, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rollout", *argv, "--admin-url", admin_url])
    assert exited.value.code == message  # SystemExit with a message: exit status 1


def test_rollout_status_table_in_local_time(
        admin_url: str, utc_plus_2: None, calls: list[tuple[str, str, object]],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollout", "status", "resnet", "--admin-url", admin_url]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ID  FROM→TO  STATE        STEP  SHARE  ORIGIN    UPDATED",
        " 7  1→2      shifting      2/4    25%  operator  2024-05-01 10:03:10",
        "    step 2/4: 25% of the traffic",
        "    verification: passed on 32 samples, p50 4.10 ms active vs 4.30 ms target",
        " 6  1→3      rolled_back   0/4     0%  auto      2024-05-01 00:15:00",
        "    verification failed: output 'y' differs"]
    assert main(["--admin-url", admin_url, "rollout", "status", "resnet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ROLLOUTS
    assert main(["rollout", "status", "fresh", "--admin-url", admin_url]) == 0
    assert capsys.readouterr().out == (
        "fresh: no rollouts yet (start one with `warmctl rollout start fresh VERSION`)\n")
    assert [(m, p) for m, p, _ in calls] == [("GET", "/models/resnet/rollouts")] * 2 + [
        ("GET", "/models/fresh/rollouts")]


@pytest.mark.parametrize("action, state", [
    ("pause", "paused"), ("resume", "shifting"), ("promote", "shifting"), ("abort", "aborted")])
def test_rollout_actions(
        admin_url: str, action: str, state: str, calls: list[tuple[str, str, object]],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollout", action, "resnet", "7", "--admin-url", admin_url]) == 0
    assert capsys.readouterr().out == (f"resnet: rollout 7 1→2 {state}, step 2/4 (25% of the "
                                       f"traffic): {action} asked\n")
    assert main(["--admin-url", admin_url, "rollout", action, "--json", "resnet", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == state
    assert calls == [("POST", f"/models/resnet/rollouts/7/{action}", None)] * 2


@pytest.mark.parametrize("argv", [
    ["rollout"], ["rollout", "pause", "resnet"], ["rollout", "pause", "resnet", "x"],
    ["rollout", "start", "resnet"], ["rollout", "rewind", "resnet", "7"]])
def test_rollout_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--admin-url", "http://127.0.0.1:9"])
    assert exited.value.code == 2
    assert "usage: warmctl rollout" in capsys.readouterr().err
