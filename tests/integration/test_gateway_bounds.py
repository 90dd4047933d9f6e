"""What clients can make the gateway hold and what they get back: bounded, without tracebacks.

One control plane for the whole module's checks (each starts a tritonserver).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.gateway.status import STATUS_MESSAGE_LIMIT
from tests.integration.conftest import StartControlPlane
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import add_identity

_RAISES = textwrap.dedent('''
    import triton_python_backend_utils as pb_utils

    def check(x):
        raise ValueError("bad input value " + str(x.shape))

    class TritonPythonModel:
        def execute(self, requests):
            check(pb_utils.get_input_tensor_by_name(requests[0], "INPUT0").as_numpy())
''')


def _build(repo: Path) -> None:
    add_identity(repo, "ident")
    (add_identity(repo, "boom") / "1" / "model.py").write_text(_RAISES)
    # Triton's reason for this failed load is over 20 KB: more than gRPC metadata can carry
    add_identity(repo, "initfail", init_fail="weights missing: " + "x" * 20_000)
    # a load that fails with the server's path of its model.py in the reason
    (add_identity(repo, "pathfail") / "1" / "model.py").write_text(
        "raise RuntimeError('cannot read the weights beside ' + __file__)\n")
    (repo / "onnx").mkdir()
    (repo / "onnx" / "config.pbtxt").write_text(
        'name: "onnx"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n')


async def _error(aio: Any, model: str, inputs: list[Any]) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as failed:
        await aio.infer(model, inputs, client_timeout=60)
    return str(failed.value.status()), failed.value.message()


def _named_input(name: str) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput(name, [1, 1], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    return [tensor]


@pytest.mark.timeout(120)
async def test_requests_and_errors_stay_bounded(
        repo: Path, start_cp: StartControlPlane, caplog: pytest.LogCaptureFixture) -> None:
    _build(repo)
    with caplog.at_level(logging.WARNING, logger="controlplane.triton.distribution"):
        cp = await start_cp(gateway={"max_request_bytes": 1 << 20})
    assert cp.manager is not None and cp.recorder is not None and cp.gateway_url
    # a backend the embedded Triton lacks: said at start-up, and the model refused with it
    assert [r.getMessage() for r in caplog.records if r.name.endswith("distribution")] == [
        "model 'onnx' will not load: its config names backend 'onnxruntime', which this "
        "Triton does not have (it has: python, torchscript; backends_dir adds Python-based "
        "ones)"]
    assert "onnxruntime" in (cp.manager.status("onnx").disabled or "")

    async with grpcclient_aio.InferenceServerClient(cp.gateway_url) as aio:
        ok = await aio.infer("ident", identity_input([[1.0, 2.0]]), client_timeout=60)
        assert ok.as_numpy("OUTPUT0").tolist() == [[1.0, 2.0]]

        status, message = await _error(aio, "ident", identity_input([[0.5] * 300_000]))
        assert status == "StatusCode.RESOURCE_EXHAUSTED"
        assert message == ("request of 1200033 bytes is over gateway.max_request_bytes "
                           "(1048576 bytes; WARMCTL_GATEWAY__MAX_REQUEST_BYTES)")

        status, message = await _error(aio, "boom", identity_input([[1.0, 2.0, 3.0]]))
        assert message.endswith("message: ValueError: bad input value (1, 3)")
        assert "At:" not in message and "model.py" not in message

        status, message = await _error(aio, "initfail", identity_input([[1.0]]))
        assert status == "StatusCode.UNAVAILABLE"
        assert message.startswith("model 'initfail' failed to load: ")
        assert "RuntimeError: weights missing: xxx" in message
        assert "characters in all, middle cut" in message
        assert len(message.encode()) <= STATUS_MESSAGE_LIMIT

        status, message = await _error(aio, "pathfail", identity_input([[1.0]]))
        assert status == "StatusCode.UNAVAILABLE" and "failed to load" in message
        assert "cannot read the weights beside .../model.py" in message, message
        assert str(repo) not in message and "At:" not in message
        assert cp.manager is not None  # the operator's view keeps the whole reason
        assert str(repo) in (cp.manager.status("pathfail").reason or "")

        status, message = await _error(aio, "m" * 500_000, identity_input([[1.0]]))
        assert status == "StatusCode.NOT_FOUND"
        assert message == ("Request for unknown model: "
                           f"'{'m' * 100}...(500000 characters)' is not found")

        status, message = await _error(aio, "ident", _named_input("Z" * 100_000))
        assert status == "StatusCode.INVALID_ARGUMENT"
        assert message.startswith("unexpected inference input 'ZZZ")
        assert len(message) <= STATUS_MESSAGE_LIMIT

        status, message = await _error(aio, "onnx", identity_input([[1.0]]))
        assert status == "StatusCode.UNAVAILABLE"
        assert "backend 'onnxruntime'" in message

    await asyncio.to_thread(_stream_error_has_no_traceback, cp)  # a sync client: off the loop
    await cp.recorder.flush()
    assert cp.recorder.unknown_models == 1
    assert cp.traffic is not None
    rows = cp.traffic.requests("ident")
    assert sorted((r.signature, r.outcome) for r in rows) == [
        ("", "INVALID_ARGUMENT"),  # the undeclared input was not stored
        ("INPUT0:FP32:1x2", "OK"),
    ]


def _stream_error_has_no_traceback(cp: ControlPlane) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with gateway_client(cp) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("boom", identity_input([[1.0]]), request_id="b1")
        _, error = answers.get(timeout=30)
        client.stop_stream()
    assert error is not None
    assert str(error.message()).endswith("ValueError: bad input value (1, 1)")
    assert "At:" not in str(error.message())
