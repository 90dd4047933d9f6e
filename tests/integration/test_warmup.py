"""Warm-up generated from recorded traffic, applied at load, probed before routing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from controlplane.app import ControlPlane
from controlplane.cli import main
from controlplane.lifecycle.states import ModelState
from tests.integration.conftest import StartControlPlane
from tests.support.repository import add_example, add_identity


@pytest.fixture
def start_cp(start_cp: StartControlPlane) -> StartControlPlane:
    """Warm-up on traffic after 10 requests; drift checked only when a test asks."""

    async def start(**overrides: Any) -> ControlPlane:
        warmup = {"min_requests": 10, "drift_check_interval_s": 3600,
                  **overrides.pop("warmup", {})}
        return await start_cp(warmup=warmup, **overrides)

    return start


def _send(cp: ControlPlane, model: str, widths: list[int]) -> None:
    assert cp.gateway_url is not None
    with grpcclient.InferenceServerClient(cp.gateway_url) as c:
        for width in widths:
            x = np.ones((1, width), dtype=np.float32)
            tensor = grpcclient.InferInput("INPUT0", [1, width], "FP32")
            tensor.set_data_from_numpy(x)
            c.infer(model, [tensor], client_timeout=30)


async def _traffic(cp: ControlPlane, model: str, widths: list[int]) -> None:
    await asyncio.to_thread(_send, cp, model, widths)
    assert cp.recorder is not None
    await cp.recorder.flush()


async def test_load_applies_generated_warmup_and_records_the_figures(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "ident")
    config_on_disk = (repo / "ident" / "config.pbtxt").read_text()
    cp = await start_cp()
    assert cp.manager is not None and cp.instance is not None
    await cp.manager.load("ident")  # no traffic yet: no sample, a batch-1 probe
    first = cp.warmups.latest("ident")
    assert first is not None and first.default and first.version == 1 and not first.samples
    event = cp.manager.store.events("ident", limit=1)[0]
    assert event.probe_count is not None and event.probe_count >= 5

    await _traffic(cp, "ident", [4] * 30 + [9] * 10)  # traffic now recorded
    await cp.manager.unload("ident")
    await cp.manager.load("ident")  # loads plain; probes prove the traffic-shaped samples
    second = cp.warmups.latest("ident")
    assert second is not None and not second.default and second.version == 2
    assert second.coverage >= 0.95
    warmed = {tuple(int(d) for d in i["dims"]) for s in second.samples
              for i in s["inputs"].values()}
    assert {(4,), (9,)} <= warmed
    assert "model_warmup" not in await cp.instance.client.model_config("ident")
    proving = cp.manager.store.events("ident", limit=1)[0].details
    assert proving is not None and proving["probe_proven"] == len(second.samples)

    await cp.manager.unload("ident")
    await cp.manager.load("ident")
    # Triton runs exactly the generated samples; the repository file is untouched
    live = await cp.instance.client.model_config("ident")
    assert [s["name"] for s in live["model_warmup"]] == [s["name"] for s in second.samples]
    assert (repo / "ident" / "config.pbtxt").read_text() == config_on_disk

    event = cp.manager.store.events("ident", limit=1)[0]
    assert (event.action, event.outcome, event.warmup_version) == ("load", "ok", 2)
    assert event.warmup_s is not None and event.warmup_s > 0
    assert event.probe_count is not None and event.probe_count >= 5
    assert event.first_probe_ms is not None and event.probe_latency_ms is not None
    assert event.details is not None and event.details["warmup_executions"] == sum(
        s["count"] for s in second.samples)


async def test_not_routed_until_probes_converge(repo: Path, start_cp: StartControlPlane) -> None:
    # first executions take 200 ms, 120 ms, 72 ms, ...: no traffic yet, so no warm-up sample;
    # the probes (batch 1 at the default length) must see them fade before traffic
    add_identity(repo, "settling", slow_executions="30", slow_ms="200", slow_decay="0.6")
    cp = await start_cp(warmup={"probe": {"window": 4, "tolerance": 0.1, "max_s": 10}})
    assert cp.manager is not None
    states: list[tuple[ModelState, float]] = []
    cp.manager.listeners.append(lambda m, s: states.append((s, time.monotonic())))
    sent = time.monotonic()
    await asyncio.to_thread(_send, cp, "settling", [4])  # lazy load through the gateway
    answered = time.monotonic()
    ready_at = next(t for s, t in states if s is ModelState.READY)
    assert [s for s, _ in states] == [ModelState.LOADING, ModelState.WARMING, ModelState.READY]
    assert sent < ready_at <= answered  # the request waited for the probes, not just Triton
    event = cp.manager.store.events("settling", limit=1)[0]
    assert event.details is not None and event.details["warmup_executions"] == 0
    assert event.first_probe_ms is not None and event.first_probe_ms > 150  # 200 ms
    assert event.probe_count is not None and event.probe_count >= 6
    assert event.probe_latency_ms is not None and event.probe_latency_ms < event.first_probe_ms / 3
    assert event.details["probe_converged"] is True


async def test_a_model_whose_every_probe_fails_serves_and_says_so(
    repo: Path, start_cp: StartControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    """Our probes never turn a model Triton loaded into a failing one; when none of them was
    answered, the reason says so in the model view, ``warmctl status`` and the metrics."""
    add_identity(repo, "broken", execute_fail="refused on purpose")
    add_identity(repo, "ident")
    cp = await start_cp()
    assert cp.manager is not None
    status = await cp.manager.load("broken")  # no traffic yet: the default batch-1 probe
    assert status.state is ModelState.READY and cp.manager.ready_now("broken")
    event = cp.manager.store.events("broken", limit=1)[0]
    assert (event.outcome, event.probe_count) == ("ok", 1)
    assert status.reason is not None
    assert status.reason.startswith("ready, but its only warm-up probe failed: default "), \
        status.reason
    assert "refused on purpose" in status.reason
    await cp.manager.load("ident")  # its probes are answered: no word
    assert cp.manager.status("ident").reason is None

    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
        view = (await http.get("/models/broken")).json()
        metrics = (await http.get("/metrics")).text
    assert (view["state"], view["reason"]) == ("ready", status.reason)
    assert [(r["state"], r["reason"]) for r in view["replicas"]] == [("ready", status.reason)]
    samples = {(s.name, s.labels.get("model")): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples
               if s.name.startswith("warmctl_model_probe_")
               and s.labels.get("triton_instance") == "default"}
    assert samples[("warmctl_model_probe_requests", "broken")] == 1
    assert samples[("warmctl_model_probe_failures", "broken")] == 1
    assert samples[("warmctl_model_probe_failures", "ident")] == 0
    assert samples[("warmctl_model_probe_requests", "ident")] >= 5

    await asyncio.to_thread(main, ["status", "--admin-url", cp.admin_url, "--wide"])
    line = next(line for line in capsys.readouterr().out.splitlines()
                if line.startswith("broken "))
    assert line.split()[1] == "ready" and line.endswith(status.reason)


async def test_drift_regenerates_and_reloads_while_serving(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "ident")
    cp = await start_cp(warmup={"reload_on_drift": True, "drift_threshold": 0.2})
    assert cp.manager is not None and cp.drift is not None
    await _traffic(cp, "ident", [4] * 20)
    await cp.manager.unload("ident")
    await cp.manager.load("ident")
    v = cp.warmups.latest("ident")
    assert v is not None and "INPUT0:FP32:1x4" in v.covered
    assert await cp.drift.check() == []  # traffic as covered: nothing to do

    await _traffic(cp, "ident", [16] * 40)  # a new dominant shape
    changed = await cp.drift.check()
    assert [(c.model, c.old_version, c.new_version, c.reloaded) for c in changed] == [
        ("ident", v.version, v.version + 1, True)]
    latest = cp.warmups.latest("ident")
    assert latest is not None and "INPUT0:FP32:1x16" in latest.covered
    assert "drift" in latest.reason
    reload = cp.manager.store.events("ident", limit=1)[0]
    assert (reload.action, reload.trigger, reload.outcome, reload.warmup_version) == (
        "reload", "drift", "ok", latest.version)
    assert cp.manager.state("ident") is ModelState.READY

    async with httpx.AsyncClient(base_url=cp.admin_url) as http:
        text = (await http.get("/models/ident/warmup-config/diff")).text
        pbtxt = (await http.get("/models/ident/warmup-config",
                                params={"format": "pbtxt"})).text
        versions = (await http.get("/models/ident/warmup-config/versions")).json()
        missing = await http.get("/models/ident/warmup-config", params={"version": 99})
    assert f"--- v{v.version}" in text and f"+++ v{latest.version}" in text
    assert '+      dims: 16' in text
    assert pbtxt.startswith(f"# warm-up config v{latest.version} of ident")
    assert "model_warmup" in pbtxt
    # v1: the default of the lazy first load, before any traffic was recorded
    assert [(x["version"], x["default"]) for x in versions] == [
        (1, True), (v.version, False), (latest.version, False)]
    assert missing.status_code == 404

    shown = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "controlplane.cli", "warmup", "show", "ident",
        "--admin-url", cp.admin_url], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout == pbtxt


async def test_batch_stats_survive_unload_without_warmup_executions(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "ident")
    cp = await start_cp()
    assert cp.manager is not None
    await _traffic(cp, "ident", [4] * 7)
    await cp.manager.unload("ident")  # Triton's counters vanish with the model; ours stay
    assert cp.warmups.batch_stats("ident") == {1: 7}


async def test_example_model_with_payload_samples_and_file_override(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_example(repo, "shortform_ranker")
    weights = (repo / "shortform_ranker" / "1" / "model.pt").read_bytes()
    cp = await start_cp(models={"shortform_ranker": {"sample_payloads": True}})
    assert cp.manager is not None and cp.gateway_url is not None
    ids = np.arange(100, 120, dtype=np.int64)[None]  # real ids, kept as a payload sample

    def send() -> None:
        with grpcclient.InferenceServerClient(cp.gateway_url) as c:
            for _ in range(12):
                a = grpcclient.InferInput("user_history", [1, 20], "INT64")
                a.set_data_from_numpy(ids)
                b = grpcclient.InferInput("context", [1, 32], "FP32")
                b.set_data_from_numpy(np.full((1, 32), 0.25, dtype=np.float32))
                c.infer("shortform_ranker", [a, b], client_timeout=60)

    await asyncio.to_thread(send)
    assert cp.recorder is not None
    await cp.recorder.flush()
    for _ in range(2):  # the first load proves the samples by probes, the next applies them
        await cp.manager.unload("shortform_ranker")
        await cp.manager.load("shortform_ranker")
    stored = cp.warmups.latest("shortform_ranker")
    assert stored is not None and stored.files  # real data travelled as warm-up files
    assert ids.tobytes() in stored.files.values()
    event = cp.manager.store.events("shortform_ranker", limit=1)[0]
    assert event.outcome == "ok" and event.details is not None
    assert event.details["warmup_files_bytes"] > 0
    # the whole directory went as file overrides; the repository is untouched
    assert (repo / "shortform_ranker" / "1" / "model.pt").read_bytes() == weights
    assert not (repo / "shortform_ranker" / "warmup").exists()
