"""The embedded tritonserver process: start, log capture, stop, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient

from controlplane.errors import TritonStartError
from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.process import TritonProcess
from tests.conftest import ROOT
from tests.integration.conftest import start_triton
from tests.support.repository import add_identity


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it no longer runs
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def test_starts_live_logs_and_stops_on_sigint(tmp_path: Path, repo: Path) -> None:
    process = start_triton(tmp_path, repo)
    assert process.pid is not None
    assert httpx.get(f"{process.http_url}/v2/health/live", timeout=2).status_code == 200
    assert "--model-control-mode=explicit" in process.command()
    assert process.stop() == 0  # SIGINT is a clean exit
    assert not _alive(process.pid)
    log = process.log_path.read_text()
    assert "Started GRPCInferenceService" in log
    assert "Signal (2) received" in log


def test_backend_directory_holds_python_backend_and_our_plugin(tmp_path: Path) -> None:
    dist = TritonDistribution.locate()
    target = dist.assemble_backend_dir(ROOT / "triton_backends", tmp_path / "backends")
    python_dir = target / "python"
    assert (python_dir / "libtriton_python.so").is_file()
    assert (python_dir / "triton_python_backend_stub").is_file()
    assert (target / "torchscript" / "model.py").is_file()
    # no symlinks: Triton refuses libraries that resolve outside the backend directory
    assert not any(p.is_symlink() for p in target.rglob("*"))


def test_port_in_use_fails_fast_with_log_tail(tmp_path: Path, repo: Path) -> None:
    first = start_triton(tmp_path / "a", repo)
    try:
        dist = TritonDistribution.locate()
        second = TritonProcess(
            dist, repo, dist.assemble_backend_dir(ROOT / "triton_backends", tmp_path / "b"),
            tmp_path / "b.log", grpc_port=first.grpc_port, startup_timeout_s=30)
        second.start()
        t0 = time.monotonic()
        with pytest.raises(TritonStartError, match="exited with code") as info:
            import asyncio
            asyncio.run(second.wait_live())
        assert time.monotonic() - t0 < 20
        assert "log" in str(info.value)
    finally:
        first.stop()


def _flaky_binary(tmp_path: Path, real: Path, crashes: int) -> Path:
    """A tritonserver that aborts (SIGABRT, as the gRPC epoll abort does) on its first
    ``crashes`` starts, then runs the real binary: the crash itself cannot be caused on demand."""
    counter = tmp_path / "starts"
    wrapper = tmp_path / "tritonserver"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        n=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}
        if [ "$n" -lt {crashes} ]; then
            echo "epoll_wait error: Bad file descriptor"; kill -ABRT $$
        fi
        exec {real} "$@"
    """))
    wrapper.chmod(0o755)
    return wrapper


def _process(tmp_path: Path, repo: Path, binary: Path) -> TritonProcess:
    real = TritonDistribution.locate()
    dist = TritonDistribution.locate(binary)
    assert dist.stub == real.stub
    return TritonProcess(dist, repo,
                         dist.assemble_backend_dir(ROOT / "triton_backends", tmp_path / "be"),
                         tmp_path / "triton.log", startup_timeout_s=30)


def test_a_start_up_crash_is_retried(tmp_path: Path, repo: Path) -> None:
    import asyncio
    binary = _flaky_binary(tmp_path, TritonDistribution.locate().binary, crashes=1)
    process = _process(tmp_path, repo, binary)
    try:
        asyncio.run(process.launch())
        assert httpx.get(f"{process.http_url}/v2/health/live", timeout=2).status_code == 200
        assert (tmp_path / "starts").read_text().strip() == "2"
        assert (tmp_path / "triton.log.1").read_text().startswith("epoll_wait error")
    finally:
        process.stop()


def test_a_start_up_that_keeps_crashing_gives_up_with_the_log(
    tmp_path: Path, repo: Path
) -> None:
    import asyncio
    binary = _flaky_binary(tmp_path, TritonDistribution.locate().binary, crashes=10)
    process = _process(tmp_path, repo, binary)
    with pytest.raises(TritonStartError, match=r"exited with code -6(.|\n)*epoll_wait"):
        asyncio.run(process.launch(attempts=2))
    assert (tmp_path / "starts").read_text().strip() == "2"


def _stubs(backend_dir: Path) -> list[int]:
    stub = str(backend_dir / "python" / "triton_python_backend_stub").encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().split(b"\0")[0] == stub:
                found.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in found if _alive(pid)]


def test_triton_dies_with_a_killed_control_plane_and_its_stubs_are_reaped(
    tmp_path: Path, repo: Path
) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the parent, and Triton must not live on as an orphan; its
    Python backend stubs (which outlive a dead server while it is an unreaped zombie) are
    ended by the watchdog within seconds, and the next start still works."""
    add_identity(repo, "ident")
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        import tritonclient.grpc as grpcclient
        from tests.integration.conftest import start_triton
        p = start_triton(Path({str(tmp_path)!r}) / "child", Path({str(repo)!r}))
        grpcclient.InferenceServerClient(p.grpc_url).load_model("ident")
        print(p.pid, flush=True)
        time.sleep(600)
    """))
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          text=True) as parent:
        assert parent.stdout is not None
        triton_pid = int(parent.stdout.readline())
        assert _alive(triton_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(triton_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(triton_pid)
    backend_dir = tmp_path / "child" / "backends"
    deadline = time.monotonic() + 10
    while _stubs(backend_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stubs(backend_dir) == []
    restarted = start_triton(tmp_path / "child", repo)  # same data: same backend directory
    try:
        grpcclient.InferenceServerClient(restarted.grpc_url).load_model("ident")
        assert len(_stubs(backend_dir)) == 1
    finally:
        restarted.stop()


def test_stop_leaves_no_stub_behind_even_when_triton_must_be_killed(
    tmp_path: Path, repo: Path
) -> None:
    add_identity(repo, "ident")
    add_identity(repo, "hangs", init_sleep_s="60")
    process = start_triton(tmp_path, repo)
    client = grpcclient.InferenceServerClient(process.grpc_url)
    client.load_model("ident")
    with pytest.raises(Exception, match="Deadline"):
        client.load_model("hangs", client_timeout=1)
    client.close()
    assert len(_stubs(tmp_path / "backends")) >= 2
    process.stop_timeout_s = 2
    process.stop()
    time.sleep(0.5)
    assert _stubs(tmp_path / "backends") == []


def test_auto_picked_ports_taken_before_triton_binds_are_retried(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import controlplane.triton.process as process_module

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    picks = iter([taken])  # the first pick for gRPC is a port someone else holds
    real_free_port = process_module.free_port
    monkeypatch.setattr(process_module, "free_port",
                        lambda host="127.0.0.1": next(picks, None) or real_free_port(host))
    try:
        process = start_triton(tmp_path, repo)
        assert process.grpc_port != taken
        assert httpx.get(f"{process.http_url}/v2/health/live", timeout=2).status_code == 200
        process.stop()
    finally:
        squatter.close()
