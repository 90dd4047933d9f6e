"""No client request can crash a tritonserver through the torchscript plugin (real Triton,
real control plane, models built here: ``tests/support/plugin_models.py``).

Three control planes: the crashing pattern of shared/cases/torch-batch-error-crash (one
out-of-range id among 8 requests batched together: a shared error object segfaulted
Triton 2.51); programs exported at a fixed batch of 1 behind ``max_batch_size: 8``; every
output form, TorchScript errors as a client sees them, and outputs that cannot map refused
at load.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.lifecycle.states import ModelState
from controlplane.triton.process import TritonProcess
from tests.integration.conftest import StartControlPlane
from tests.support import plugin_models as pm
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import add_identity

Answer = tuple[dict[str, np.ndarray[Any, Any]] | None, str | None]


def _input(name: str, array: np.ndarray[Any, Any]) -> grpcclient.InferInput:
    datatype = "INT64" if array.dtype == np.int64 else "FP32"
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def concurrently(cp: ControlPlane, model: str, name: str, arrays: list[np.ndarray[Any, Any]],
                 outputs: list[str]) -> list[Answer]:
    """All requests sent at once (async_infer), answers in request order: outputs or the
    error message."""
    answers: queue.Queue[tuple[int, Answer]] = queue.Queue()

    def done(i: int) -> Any:
        def callback(result: Any, error: InferenceServerException | None) -> None:
            if error is not None:
                answers.put((i, (None, error.message())))
            else:
                answers.put((i, ({o: result.as_numpy(o) for o in outputs}, None)))
        return callback

    with gateway_client(cp) as client:
        for i, array in enumerate(arrays):
            client.async_infer(model, [_input(name, array)], callback=done(i),
                               client_timeout=120)
        got = dict(answers.get(timeout=150) for _ in arrays)
    return [got[i] for i in range(len(arrays))]


def eager(module: torch.nn.Module, array: np.ndarray[Any, Any]) -> Any:
    with torch.inference_mode():
        return module.eval()(torch.from_numpy(array))


def triton_log(cp: ControlPlane) -> str:
    assert cp.supervisor is not None and cp.supervisor.process is not None
    path: Path = cp.supervisor.process.log_path  # type: ignore[attr-defined]
    return path.read_text(errors="replace")


def triton_snapshot(cp: ControlPlane) -> dict[str, Any]:
    assert cp.supervisor is not None
    return cp.supervisor.snapshot()


def bystander_answers(cp: ControlPlane) -> bool:
    with gateway_client(cp) as client:
        out = client.infer("bystander", identity_input([[1.5, 2.5]]), client_timeout=30)
    return bool(out.as_numpy("OUTPUT0").tolist() == [[1.5, 2.5]])


async def test_a_bad_id_in_a_batch_fails_alone_and_triton_survives(
    repo: Path, start_cp: StartControlPlane,
) -> None:
    ranker = pm.IdRanker()
    params = {"warmctl.input_range.ids": f"0:{pm.VOCAB}"}  # the warm-up sends valid ids
    pm.add_model(repo, "ids_ts", ranker, pm.config(
        "ids_ts", pm.IDS_IN, pm.SCORE_OUT, delay_us=20_000, params=params))
    pm.add_model(repo, "ids_ep", ranker, pm.config(
        "ids_ep", pm.IDS_IN, pm.SCORE_OUT, delay_us=20_000, params=params),
        fmt="exported_program", example=(torch.zeros(4, 4, dtype=torch.long),),
        dynamic={"ids": {0: torch.export.Dim("batch", min=1, max=8)}})
    add_identity(repo, "bystander")
    cp = await start_cp()
    assert cp.manager is not None
    for model in ("ids_ts", "ids_ep", "bystander"):
        await cp.manager.load(model)
        assert cp.manager.state(model) is ModelState.READY
    before = triton_snapshot(cp)
    assert before["pid"] is not None and before["state"] == "live"

    rng = np.random.default_rng(3)
    for model in ("ids_ts", "ids_ep", "ids_ts", "ids_ep"):
        arrays = [rng.integers(0, pm.VOCAB, (1, 4), dtype=np.int64) for _ in range(8)]
        arrays[3] = np.array([[1, 2, 3, 5000]], np.int64)
        answers = await asyncio.to_thread(concurrently, cp, model, "ids", arrays, ["score"])
        for i, (outputs, error) in enumerate(answers):
            if i == 3:
                assert outputs is None and error is not None, answers
                assert "index out of range in self" in error, error
                assert re.match(r"(Runtime|Index)Error: ", error), error
                assert "serialized code" not in error and "Traceback" not in error
                assert "/" not in error and len(error) <= 1000, error
            else:
                assert error is None and outputs is not None, (i, error)
                np.testing.assert_allclose(outputs["score"], eager(ranker, arrays[i]).numpy(),
                                           rtol=1e-5, atol=1e-6)

    log = triton_log(cp)
    # the failed pass really was a batch of several requests, run again one by one
    batched = [int(n) for n in re.findall(r"a batch of (\d+) requests failed", log)]
    assert batched and max(batched) >= 2, batched
    assert "index out of range in self" in log and "request failed" in log
    after = triton_snapshot(cp)
    assert after["pid"] == before["pid"] and after["state"] == "live", after
    assert after["outages_total"] == before["outages_total"] == 0
    assert await asyncio.to_thread(bystander_answers, cp)
    one = [rng.integers(0, pm.VOCAB, (2, 4), dtype=np.int64)]
    (outputs, error), = await asyncio.to_thread(concurrently, cp, "ids_ts", "ids", one,
                                                ["score"])
    assert error is None and outputs is not None
    np.testing.assert_allclose(outputs["score"], eager(ranker, one[0]).numpy(), rtol=1e-5)


async def test_a_program_exported_at_batch_1_is_served_in_pieces(
    repo: Path, start_cp: StartControlPlane,
) -> None:
    ranker = pm.IdRanker()
    static = {"example": (torch.zeros(1, 4, dtype=torch.long),), "dynamic": None}
    pm.add_model(repo, "fixed_ep", ranker, pm.config(
        "fixed_ep", pm.IDS_IN, pm.SCORE_OUT, delay_us=20_000),
        fmt="exported_program", **static)  # type: ignore[arg-type]
    # an AOTInductor package does not even check its input: fed a batch of 8 it answered
    # one row (the other requests got nothing, or another's rows)
    pm.add_model(repo, "fixed_aoti", ranker, pm.config(
        "fixed_aoti", pm.IDS_IN, pm.SCORE_OUT, delay_us=20_000),
        fmt="aoti", **static)  # type: ignore[arg-type]
    cp = await start_cp()
    assert cp.manager is not None
    for model in ("fixed_ep", "fixed_aoti"):
        await cp.manager.load(model)
        assert cp.manager.state(model) is ModelState.READY, cp.manager.status(model)

    rng = np.random.default_rng(11)
    for model in ("fixed_ep", "fixed_aoti"):
        # eight requests batched together, and requests of several rows each
        arrays = [rng.integers(0, pm.VOCAB, (1 + i % 3, 4), dtype=np.int64) for i in range(8)]
        answers = await asyncio.to_thread(concurrently, cp, model, "ids", arrays, ["score"])
        for array, (outputs, error) in zip(arrays, answers, strict=True):
            assert error is None and outputs is not None, (model, error)
            assert outputs["score"].shape == (array.shape[0], 1)
            np.testing.assert_allclose(outputs["score"], eager(ranker, array).numpy(),
                                       rtol=1e-5, atol=1e-6)
    log = triton_log(cp)
    for model in ("fixed_ep", "fixed_aoti"):
        warning = re.search(
            rf"{model}: model.pt2 takes batches of exactly 1 row\(s\) but max_batch_size is "
            r"8: every forward pass is split into pieces of at most 1 row\(s\); batching "
            r"gains nothing\. To batch up to 8, export it with dynamic_shapes=\{'ids': "
            r"\{0: torch\.export\.Dim\('batch', max=8\)\}\}", log)
        assert warning, log[-3000:]
    assert "requests failed" not in log  # nothing failed: split before running, not retried
    assert triton_snapshot(cp)["outages_total"] == 0


async def test_output_forms_errors_and_mismatches(
    repo: Path, start_cp: StartControlPlane,
) -> None:
    heads, nested = pm.TwoHeads(), pm.Nested()
    two_out = ('{ name: "total" data_type: TYPE_FP32 dims: [ 1 ] }, '
               '{ name: "doubled" data_type: TYPE_FP32 dims: [ 3 ] }')
    three_out = ('{ name: "plus" data_type: TYPE_FP32 dims: [ 3 ] }, '
                 '{ name: "times" data_type: TYPE_FP32 dims: [ 3 ] }, '
                 '{ name: "top" data_type: TYPE_FP32 dims: [ 1 ] }')
    pm.add_model(repo, "dict_ts", heads, pm.config("dict_ts", pm.X_IN, two_out))
    pm.add_model(repo, "nested_ts", nested, pm.config("nested_ts", pm.X_IN, three_out))
    pm.add_model(repo, "picker_ts", pm.Picker(), pm.config(
        "picker_ts", pm.X_IN, '{ name: "picked" data_type: TYPE_FP32 dims: [ 1 ] }'))
    pm.add_model(repo, "nested_ep", nested, pm.config("nested_ep", pm.X_IN, three_out),
                 fmt="exported_program", example=(torch.ones(2, 3),),
                 dynamic={"x": {0: torch.export.Dim("batch", max=8)}})
    # cannot map: a dict without a configured name; three outputs where two are configured
    pm.add_model(repo, "dict_missing", heads, pm.config(
        "dict_missing", pm.X_IN, two_out.replace('"total"', '"mean"')))
    pm.add_model(repo, "too_many_ep", nested, pm.config("too_many_ep", pm.X_IN, two_out),
                 fmt="exported_program", example=(torch.ones(2, 3),),
                 dynamic={"x": {0: torch.export.Dim("batch", max=8)}})
    cp = await start_cp(lifecycle={"retry_initial_s": 0})
    assert cp.manager is not None
    await asyncio.gather(*(cp.manager.load(m)
                           for m in ("dict_ts", "nested_ts", "nested_ep", "picker_ts")))

    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((1 + i % 2, 3), dtype=np.float32) for i in range(4)]
    bad = np.array([[2e6, 0.0, 1.0]], np.float32)
    answers = await asyncio.to_thread(concurrently, cp, "dict_ts", "x", [*arrays, bad],
                                      ["total", "doubled"])
    for array, (outputs, error) in zip(arrays, answers[:-1], strict=True):
        assert error is None and outputs is not None, error
        want = eager(heads, array)
        np.testing.assert_allclose(outputs["total"], want["total"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(outputs["doubled"], want["doubled"].numpy(), rtol=1e-6)
    # the model's own error, as its author wrote it: no TorchScript code, no paths
    assert answers[-1] == (None, "ValueError: feature sum over 1e6"), answers[-1]

    for model in ("nested_ts", "nested_ep"):
        answers = await asyncio.to_thread(concurrently, cp, model, "x", arrays,
                                          ["plus", "times", "top"])
        for array, (outputs, error) in zip(arrays, answers, strict=True):
            assert error is None and outputs is not None, (model, error)
            plus, (times, top) = eager(nested, array)
            np.testing.assert_allclose(outputs["plus"], plus.numpy(), rtol=1e-6)
            np.testing.assert_allclose(outputs["times"], times.numpy(), rtol=1e-6)
            np.testing.assert_allclose(outputs["top"], top.numpy(), rtol=1e-6)

    # a runtime error inside the TorchScript interpreter reaches the client short
    answers = await asyncio.to_thread(concurrently, cp, "picker_ts", "x", [
        np.array([[2.0, 5.0, 9.0]], np.float32), np.array([[7.0, 1.0, 2.0]], np.float32)],
        ["picked"])
    assert answers[0][1] is None and answers[0][0] is not None
    assert answers[0][0]["picked"].tolist() == [[9.0]]
    assert answers[1] == (None, "RuntimeError: index 7 is out of bounds for dimension 1 with "
                          "size 3"), answers[1]

    for model, reason in (("dict_missing", "the config's output(s) 'mean' are not among them"),
                          ("too_many_ep",
                           "returned 3 value(s) (tuple(tensor, tuple(tensor, tensor)))")):
        with pytest.raises(Exception, match=re.escape(reason)):
            await cp.manager.load(model)
        assert cp.manager.state(model) is ModelState.FAILED
        assert "does not fit its config" in (cp.manager.status(model).reason or "")
    assert triton_snapshot(cp)["outages_total"] == 0


def test_reloads_that_create_an_instance_beside_the_old_leave_triton_alive(
    repo: Path, triton: TritonProcess,
) -> None:
    """A reload with a changed config (every rollout's: a version pin) makes Triton create
    the new instance beside the old one, with the same model, version and instance name.
    The plugin's metric series were keyed by those alone, so both instances shared one, the
    old one's finalize freed it, and the new one's next write under traffic corrupted
    Triton's heap (SIGABRT "unaligned tcache chunk" seconds after a rollout step). Plain
    tritonserver, traffic throughout, six such reloads: Triton lives, no request fails."""
    pm.add_model(repo, "ids_ts", pm.IdRanker(), pm.config("ids_ts", pm.IDS_IN, pm.SCORE_OUT))
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    client.load_model("ids_ts")
    pid = triton.pid
    stop = threading.Event()
    outcomes: list[str] = []

    def traffic() -> None:
        c = grpcclient.InferenceServerClient(triton.grpc_url)
        ids = np.array([[1, 2, 3, 4]], np.int64)
        while not stop.is_set():
            try:
                c.infer("ids_ts", [_input("ids", ids)], client_timeout=10)
                outcomes.append("ok")
            except InferenceServerException as exc:
                outcomes.append(exc.message() or "failed")
            time.sleep(0.01)

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        config: dict[str, Any] = client.get_model_config("ids_ts", as_json=True)["config"]
        for reload in range(6):
            config["parameters"] = {**config.get("parameters", {}),
                                    "reload": {"string_value": str(reload)}}
            client.load_model("ids_ts", config=json.dumps(config))
            time.sleep(2.5)  # the old instance finalizes; the new one writes its metrics
            assert triton.returncode is None, triton.log_tail()
            assert "Signal (" not in triton.log_tail(200), triton.log_tail()
            # two loads of one instance name: one series each while both live
            loads = {line.split('load_id="')[1].split('"')[0]
                     for line in httpx.get(triton.metrics_url, timeout=10)
                     .text.splitlines()
                     if line.startswith("warmctl_resident_bytes") and "ids_ts" in line}
            assert loads, "the plugin reports its memory per load"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert triton.pid == pid and triton.returncode is None
    assert client.is_server_live(client_timeout=5)
    assert outcomes.count("ok") > 100 and [o for o in outcomes if o != "ok"] == []
