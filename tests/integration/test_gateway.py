"""The gRPC gateway: unchanged tritonclient programs, lazy loads, deadlines, recording."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.config import Settings
from controlplane.store.database import Database
from controlplane.traffic.store import TrafficStore
from tests.integration.conftest import StartControlPlane
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import (
    add_decoupled,
    add_example,
    add_identity,
    add_warmed_identity,
)


async def test_unchanged_tritonclient_programs_work_through_the_gateway(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_example(repo, "thumbnail_scorer")
    add_identity(repo, "ident")
    add_decoupled(repo, "fanout")
    cp = await start_cp()

    def sync_program() -> dict[str, Any]:
        with gateway_client(cp) as c:
            seen: dict[str, Any] = {
                "live": c.is_server_live(), "ready": c.is_server_ready(),
                "model_ready": c.is_model_ready("ident"),
                "unknown_ready": c.is_model_ready("nope"),
                "server": c.get_server_metadata(as_json=True)["name"],
                "cold_meta": c.get_model_metadata("ident", as_json=True),
                "cold_config": c.get_model_config("ident", as_json=True)["config"],
            }
            result = c.infer("ident", identity_input([[1.0, 2.0, 3.0]]))
            seen["out"] = result.as_numpy("OUTPUT0").tolist()
            seen["meta"] = c.get_model_metadata("ident", as_json=True)
            seen["stats"] = c.get_inference_statistics("ident", as_json=True)
            seen["index"] = {m["name"]: m.get("state") for m in
                             c.get_model_repository_index(as_json=True)["models"]}
            results: list[tuple[Any, Any]] = []
            done = threading.Event()
            c.async_infer("ident", identity_input([[5.0]]),
                          lambda result, error: (results.append((result, error)), done.set()))
            assert done.wait(30)
            seen["async"] = results[0][0].as_numpy("OUTPUT0").tolist()
            responses: queue.Queue[Any] = queue.Queue()
            c.start_stream(callback=lambda result, error: responses.put((result, error)))
            flat = grpcclient.InferInput("INPUT0", [3], "FP32")  # no batch dim: max_batch_size 0
            flat.set_data_from_numpy(np.array([1.0, 2.0, 3.0], dtype=np.float32))
            c.async_stream_infer("fanout", [flat], request_id="s1")
            c.async_stream_infer("ident", identity_input([[9.0]]), request_id="s2")
            streamed: list[Any] = []
            try:
                for _ in range(4):
                    streamed.append(responses.get(timeout=30))
            except queue.Empty:
                assert cp.manager is not None
                got = [(r and r.get_response().id, e and str(e)) for r, e in streamed]
                raise AssertionError(f"stream answered only {got}; models: "
                                     f"{cp.manager.statuses()}") from None
            c.stop_stream()
            seen["stream"] = sorted(
                (r.get_response().id, r.as_numpy("OUTPUT0").tolist()) for r, e in streamed)
            return seen

    seen = await asyncio.to_thread(sync_program)
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert not seen["unknown_ready"]
    assert seen["server"] == "triton"
    assert seen["cold_meta"] == seen["meta"]  # answered from the repository while cold
    assert seen["cold_config"]["max_batch_size"] == 8
    assert seen["out"] == [[1.0, 2.0, 3.0]]
    assert seen["async"] == [[5.0]]
    assert seen["stats"]["model_stats"][0]["name"] == "ident"
    assert seen["index"]["ident"] == "READY" and seen["index"]["thumbnail_scorer"] is None
    assert seen["stream"] == [("s1", [1.0]), ("s1", [2.0]), ("s1", [3.0]), ("s2", [[9.0]])]

    # the asyncio client too
    assert cp.gateway_url is not None
    async with grpcclient_aio.InferenceServerClient(cp.gateway_url) as aio:
        result = await aio.infer("ident", identity_input([[4.0]]))
        assert result.as_numpy("OUTPUT0").tolist() == [[4.0]]


async def test_concurrent_first_requests_cause_exactly_one_load(
    repo: Path, start_cp: StartControlPlane, tmp_path: Path
) -> None:
    inits = tmp_path / "inits.log"
    add_identity(repo, "lazy", init_log=str(inits), init_sleep_s="1")
    cp = await start_cp()
    assert cp.manager is not None and cp.manager.state("lazy") == "cold"

    def one(i: int) -> list[list[float]]:
        with gateway_client(cp) as c:
            return c.infer("lazy", identity_input([[float(i)]]), client_timeout=30).as_numpy(
                "OUTPUT0").tolist()

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(20) as clients:  # 20 at once: the default pool has 6 threads here
        outputs = await asyncio.gather(*(loop.run_in_executor(clients, one, i)
                                         for i in range(20)))
    assert outputs == [[[float(i)]] for i in range(20)]  # every request answered, in full
    assert len(inits.read_text().splitlines()) == 1
    assert [e.trigger for e in cp.manager.store.events("lazy")] == ["gateway"]
    assert cp.recorder is not None
    await cp.recorder.flush()
    assert cp.traffic is not None
    rows = cp.traffic.requests("lazy")
    assert len(rows) == 20 and all(r.cold for r in rows)
    assert min(r.wait_ms or 0 for r in rows) > 500  # each waited for the load


async def test_failing_load_is_unavailable_with_the_reason(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "broken", init_fail="cannot open the weights")
    cp = await start_cp()
    with gateway_client(cp) as c:
        for _ in range(2):  # the second fails at once, from the recorded failure
            t0 = time.monotonic()
            with pytest.raises(InferenceServerException) as info:
                await asyncio.to_thread(c.infer, "broken", identity_input([[1.0]]))
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            assert "cannot open the weights" in (info.value.message() or "")
        assert time.monotonic() - t0 < 0.5
        with pytest.raises(InferenceServerException) as unknown:
            await asyncio.to_thread(c.infer, "nope", identity_input([[1.0]]))
        assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert cp.manager is not None
    assert len(cp.manager.store.events("broken")) == 1  # the backoff did not retry


async def test_deadline_shorter_than_the_load(repo: Path, start_cp: StartControlPlane) -> None:
    add_identity(repo, "slow", init_sleep_s="2")
    cp = await start_cp()
    with gateway_client(cp) as c:
        t0 = time.monotonic()
        with pytest.raises(InferenceServerException) as info:
            await asyncio.to_thread(c.infer, "slow", identity_input([[1.0]]), client_timeout=0.5)
        assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        assert time.monotonic() - t0 < 1.5
        assert cp.manager is not None
        for _ in range(100):  # the load goes on without any request waiting for it
            if cp.manager.ready_now("slow"):
                break
            await asyncio.sleep(0.05)
        assert cp.manager.ready_now("slow")
        t1 = time.monotonic()
        result = await asyncio.to_thread(c.infer, "slow", identity_input([[2.0]]), client_timeout=5)
        assert result.as_numpy("OUTPUT0").tolist() == [[2.0]]
        assert time.monotonic() - t1 < 0.5


async def test_recorded_shapes_and_counts_match_what_was_sent_warmup_excluded(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_warmed_identity(repo, "warmed", batch_size=2, count=3)
    cp = await start_cp(traffic={"flush_interval_s": 0.2})
    sent = {(1, 4): 7, (2, 4): 3, (1, 9): 5}
    with gateway_client(cp) as c:
        for (batch, width), n in sent.items():
            for _ in range(n):
                await asyncio.to_thread(c.infer, "warmed", identity_input([[0.5] * width] * batch))
        stats = await asyncio.to_thread(c.get_inference_statistics, "warmed", "", None, True)
    triton_count = int(stats["model_stats"][0]["inference_count"])
    # config.pbtxt's own warm-up (2 x 3) ran, and warmctl's generated warm-up and probes on top
    assert triton_count >= sum(b * n for (b, _), n in sent.items()) + 2 * 3 + 3
    await asyncio.sleep(0.5)  # the background flush, not an explicit one
    assert cp.traffic is not None
    shapes = {s.signature: s.count for s in cp.traffic.shapes("warmed")}
    assert shapes == {f"INPUT0:FP32:{b}x{w}": n for (b, w), n in sent.items()}
    usage = cp.traffic.usage("warmed", time.time() - 300, time.time())
    assert sum(u.requests for u in usage) == sum(sent.values())  # warm-up never counted
    assert sum(u.cold_starts for u in usage) == 1


async def test_nothing_recorded_is_lost_on_a_clean_stop(
    repo: Path, make_settings: Callable[..., Settings]
) -> None:
    add_identity(repo, "ident")
    settings = make_settings(gateway={"port": 0}, traffic={"flush_interval_s": 3600})
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    with gateway_client(cp) as c:
        for i in range(50):
            await asyncio.to_thread(c.infer, "ident", identity_input([[float(i)]]))
    await cp.stop()  # no flush has run yet: the interval is an hour
    database = Database(settings.db_url)
    try:
        usage = TrafficStore(database, "default").usage("ident", 0, time.time() + 60)
        assert sum(u.requests for u in usage) == 50
    finally:
        database.close()


async def test_payload_samples_are_opt_in_and_bounded(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "sampled")
    add_identity(repo, "private")
    cp = await start_cp(models={"sampled": {"sample_payloads": True}},
                        traffic={"sample_per_shape": 2})
    with gateway_client(cp) as c:
        for i in range(5):
            for model in ("sampled", "private"):
                await asyncio.to_thread(c.infer, model, identity_input([[float(i), 1.5]]))
    assert cp.recorder is not None and cp.traffic is not None
    await cp.recorder.flush()
    samples = cp.traffic.samples("sampled")
    assert len(samples) == 2  # per-shape cap
    assert [np.frombuffer(s.data, dtype=np.float32).tolist() for s in samples] == [
        [0.0, 1.5], [1.0, 1.5]]
    assert samples[0].inputs == [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "offset": 0, "size": 8}]
    assert cp.traffic.samples("private") == []


async def test_repository_control_and_malformed_requests(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "ident")
    cp = await start_cp()
    with gateway_client(cp) as c:
        with pytest.raises(InferenceServerException) as refused:
            await asyncio.to_thread(c.load_model, "ident")
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "admin API" in (refused.value.message() or "")
    assert cp.gateway_url is not None
    async with grpc.aio.insecure_channel(cp.gateway_url) as channel:
        # bytes that are no protobuf: INVALID_ARGUMENT with a short reason, on every method
        for method in ("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig",
                       "RepositoryModelLoad", "SystemSharedMemoryStatus"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.aio.AioRpcError) as garbage:
                await call(b"\xff\xff\xff", timeout=5)
            assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            details = garbage.value.details() or ""
            assert details.startswith("malformed ") and len(details) < 200, details
            assert "DecodeError" not in details and "class" not in details

    allowed = await start_cp(gateway={"allow_repository_control": True})
    assert allowed.manager is not None
    with gateway_client(allowed) as c:
        await asyncio.to_thread(c.load_model, "ident")
        assert allowed.manager.ready_now("ident")
        await asyncio.to_thread(c.unload_model, "ident")
        # an operator's unload, as through the admin API: held cold, and not ready at once
        status = allowed.manager.status("ident")
        assert status.state == "cold" and status.held
        assert await asyncio.to_thread(c.is_model_ready, "ident") is False
        with pytest.raises(InferenceServerException) as held:
            await asyncio.to_thread(c.infer, "ident", identity_input([[1.0]]))
        # plain Triton's answer for a model unloaded through its repository API, and why
        assert held.value.status() == "StatusCode.NOT_FOUND"
        assert (held.value.message() or "").startswith(
            "Request for unknown model: 'ident' has no available versions: ")
        assert "held cold" in (held.value.message() or "")
        await asyncio.to_thread(c.load_model, "ident")  # the operator's load ends the hold
        assert await asyncio.to_thread(c.is_model_ready, "ident") is True
        assert not allowed.manager.status("ident").held


async def test_stream_errors_arrive_in_stream_and_the_stream_goes_on(
    repo: Path, start_cp: StartControlPlane
) -> None:
    add_identity(repo, "ident")
    add_identity(repo, "broken", init_fail="no weights")
    cp = await start_cp()

    def program() -> list[tuple[str | None, str | None]]:
        responses: queue.Queue[Any] = queue.Queue()
        with gateway_client(cp) as c:
            c.start_stream(callback=lambda result, error: responses.put((result, error)))
            for model, request_id in (("nope", "a"), ("broken", "b"), ("ident", "c")):
                c.async_stream_infer(model, identity_input([[1.0]]), request_id=request_id)
            got = [responses.get(timeout=30) for _ in range(3)]
            c.stop_stream()
        return [(r.get_response().id if r else None, str(e) if e else None) for r, e in got]

    got = await asyncio.to_thread(program)
    assert got[0][1] is not None and "Request for unknown model: 'nope' is not found" in got[0][1]
    assert got[1][1] is not None and "no weights" in got[1][1]
    assert got[2] == ("c", None)


async def test_admin_usage_and_shapes(repo: Path, start_cp: StartControlPlane) -> None:
    import httpx

    add_identity(repo, "ident")
    cp = await start_cp()
    with gateway_client(cp) as c:
        for width in (3, 3, 5):
            await asyncio.to_thread(c.infer, "ident", identity_input([[1.0] * width]))
    assert cp.recorder is not None
    await cp.recorder.flush()
    async with httpx.AsyncClient(base_url=cp.admin_url) as http:
        usage = (await http.get("/models/ident/usage", params={"minutes": 5})).json()
        shapes = (await http.get("/models/ident/shapes")).json()
        missing = await http.get("/models/nope/shapes")
        bad = await http.get("/models/ident/usage", params={"minutes": 0})
    assert (usage["requests"], usage["cold_starts"]) == (3, 1)
    assert sum(p["requests"] for p in usage["points"]) == 3
    assert [(s["signature"], s["count"], round(s["share"], 2)) for s in shapes] == [
        ("INPUT0:FP32:1x3", 2, 0.67), ("INPUT0:FP32:1x5", 1, 0.33)]
    assert missing.status_code == 404 and bad.status_code == 422


async def test_a_mixed_stream_cannot_crash_triton_through_the_gateway(
    repo: Path, start_cp: StartControlPlane
) -> None:
    """Triton 2.51 aborts when a decoupled and a plain model share one stream (seen within 5
    tries sent to it directly); the gateway gives each model its own upstream stream."""
    add_decoupled(repo, "fanout")
    add_identity(repo, "ident")
    cp = await start_cp(models={"fanout": {"pinned": True}, "ident": {"pinned": True}})

    def program() -> int:
        answered = 0
        responses: queue.Queue[Any] = queue.Queue()
        with gateway_client(cp) as c:
            for trial in range(30):
                c.start_stream(callback=lambda result, error: responses.put((result, error)))
                flat = grpcclient.InferInput("INPUT0", [3], "FP32")
                flat.set_data_from_numpy(np.array([1.0, 2.0, 3.0], dtype=np.float32))
                c.async_stream_infer("fanout", [flat], request_id=f"f{trial}")
                c.async_stream_infer("ident", identity_input([[9.0]]), request_id=f"i{trial}")
                for _ in range(4):
                    result, error = responses.get(timeout=10)
                    assert error is None and result.get_response().id in (f"f{trial}",
                                                                          f"i{trial}")
                    answered += 1
                c.stop_stream()
        return answered

    assert await asyncio.to_thread(program) == 30 * 4
    assert cp.instance is not None and cp.instance.process is not None
    assert cp.instance.process.returncode is None  # Triton still up
    assert "ASSERTION FAILED" not in cp.instance.process.log_path.read_text()
