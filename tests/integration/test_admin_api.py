"""The whole control plane (embedded Triton it starts itself) through its admin REST API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from controlplane.app import ControlPlane
from controlplane.config import Settings
from tests.support.repository import add_example, add_identity, add_triton_rejected


@pytest.fixture
async def control_plane(
    repo: Path, make_settings: Callable[..., Settings]
) -> AsyncIterator[ControlPlane]:
    add_example(repo, "thumbnail_scorer")
    add_identity(repo, "slow_pinned", init_sleep_s="1.5")
    add_identity(repo, "ident")
    add_triton_rejected(repo, "broken")
    settings = make_settings(models={
        "slow_pinned": {"pinned": True, "priority": 5},
        "thumbnail_scorer": {"pinned": True, "priority": 1},
    })
    cp = ControlPlane(settings)
    await cp.start()
    yield cp
    await cp.stop()
    assert cp.instance is not None and cp.instance.process is not None
    assert cp.instance.process.returncode is not None  # Triton stopped with us


async def _get(cp: ControlPlane, path: str, method: str = "GET", **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=60) as http:
        return await http.request(method, path, **kw)


async def test_readyz_waits_for_pinned_models_in_priority_order(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    early = await _get(cp, "/readyz")
    assert early.status_code == 503
    assert early.json()["detail"]["pinned_pending"] == ["slow_pinned", "thumbnail_scorer"]
    assert (await _get(cp, "/healthz")).status_code == 200  # alive while warming

    for _ in range(300):
        if (await _get(cp, "/readyz")).status_code == 200:
            break
        await asyncio.sleep(0.1)
    ready = await _get(cp, "/readyz")
    assert ready.status_code == 200, ready.json()

    models = {m["name"]: m for m in (await _get(cp, "/models")).json()}
    assert set(models) == {"thumbnail_scorer", "slow_pinned", "ident", "broken"}
    assert models["slow_pinned"]["state"] == "ready" and models["slow_pinned"]["pinned"]
    assert models["ident"]["state"] == "cold"
    assert models["thumbnail_scorer"]["memory_bytes"] > 0
    first = (await _get(cp, "/models/slow_pinned")).json()["events"][-1]
    second = (await _get(cp, "/models/thumbnail_scorer")).json()["events"][-1]
    assert first["trigger"] == second["trigger"] == "startup"
    assert first["finished_at"] <= second["started_at"]  # priority order, one at a time

    # a pinned model answers a plain tritonclient.grpc inference
    assert cp.instance is not None
    with grpcclient.InferenceServerClient(cp.instance.grpc_url) as c:
        inp = grpcclient.InferInput("image_features", [1, 256], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 256), dtype=np.float32))
        score = c.infer("thumbnail_scorer", [inp], client_timeout=10).as_numpy("score")
    assert score is not None and score.shape == (1, 1) and 0 < float(score[0, 0]) < 1


async def test_load_unload_and_errors_over_http(control_plane: ControlPlane) -> None:
    cp = control_plane
    loaded = await _get(cp, "/models/ident/load", "POST")
    assert loaded.status_code == 200 and loaded.json()["state"] == "ready"
    assert loaded.json()["versions"] == ["1"]
    unloaded = await _get(cp, "/models/ident/unload", "POST")
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "cold"
    # cold: it holds nothing, and serves no version
    assert unloaded.json()["memory_bytes"] is None and unloaded.json()["versions"] == []

    missing = await _get(cp, "/models/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": {
        "code": "not_found", "message": "Request for unknown model: 'nope' is not found",
        "model": "nope"}}
    assert (await _get(cp, "/models/nope/load", "POST")).status_code == 404

    failed = await _get(cp, "/models/broken/load", "POST")
    assert failed.status_code == 503
    assert "preferred size must be <= max batch size" in failed.json()["error"]["message"]
    detail = (await _get(cp, "/models/broken")).json()
    assert detail["state"] == "failed"
    assert "preferred size must be <= max batch size" in detail["reason"]
    assert detail["events"][0]["outcome"] == "failed"

    pinned = await _get(cp, "/models/slow_pinned/unload", "POST")
    assert pinned.status_code == 409 and pinned.json()["error"]["code"] == "conflict"
    bad = await _get(cp, "/models/ident/unload", "POST", params={"force": "perhaps"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_argument"


async def test_cli_status_against_the_running_control_plane(control_plane: ControlPlane) -> None:
    cp = control_plane
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "controlplane.cli", "status", "--admin-url", cp.admin_url],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("control plane: ")
    rows = {line.split()[0]: line.split()[1] for line in lines[2:]}
    assert rows.keys() == {"thumbnail_scorer", "slow_pinned", "ident", "broken"}
    assert rows["ident"] == "cold"

    load = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "controlplane.cli", "load", "nope", "--admin-url", cp.admin_url],
        capture_output=True, text=True, timeout=60)
    assert load.returncode != 0
    assert "404: Request for unknown model: 'nope' is not found" in load.stderr
