"""The KServe-v2 HTTP/REST front door (issue 19), driven by ``tritonclient.http`` unchanged and
by plain HTTP: the same lazy loads, routing, recording, bounds and error shapes as gRPC.
Every Triton is a real tritonserver on loopback ports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from controlplane.app import ControlPlane
from tests.integration.conftest import StartControlPlane
from tests.support.kinds import add_model
from tests.support.repository import add_identity
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(180)

#: BYTES in, their lengths out
_LENGTHS = '''
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            words = pb_utils.get_input_tensor_by_name(r, "text").as_numpy()
            n = np.array([[len(w) for w in row] for row in words], dtype=np.int32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("n", n)]))
        return out
'''


def _client(cp: ControlPlane) -> httpclient.InferenceServerClient:
    assert cp.gateway_http_url is not None
    return httpclient.InferenceServerClient(cp.gateway_http_url.removeprefix("http://"),
                                            network_timeout=60)


def _tensor(name: str, array: np.ndarray, binary: bool) -> httpclient.InferInput:
    t = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    t.set_data_from_numpy(array, binary_data=binary)
    return t


async def test_tritonclient_http_unchanged_through_the_gateway(
        start_cp: StartControlPlane, repo: Path) -> None:
    add_identity(repo, "ident")
    add_model(repo, "lengths", None, '''
        backend: "python"
        max_batch_size: 4
        input [ { name: "text" data_type: TYPE_STRING dims: [ -1 ] } ]
        output [ { name: "n" data_type: TYPE_INT32 dims: [ -1 ] } ]
        instance_group [ { kind: KIND_CPU count: 1 } ]''')
    (repo / "lengths" / "1" / "model.py").write_text(_LENGTHS)
    cp = await start_cp(traffic={"flush_interval_s": 0.1}, scheduler={"enabled": False})
    assert cp.recorder is not None and cp.manager is not None
    x = np.arange(6, dtype=np.float32).reshape(2, 3)

    def drive() -> None:  # one thread: tritonclient.http runs on gevent
        client = _client(cp)
        try:
            assert client.is_server_live() and client.is_server_ready()
            # metadata and config of a cold model, from its config.pbtxt
            meta = client.get_model_metadata("ident")
            assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32",
                                       "shape": [-1, -1]}]
            config = client.get_model_config("ident")
            assert config["name"] == "ident" and config["max_batch_size"] == 8
            assert client.is_model_ready("ident")  # a cold model loads on request
            assert cp.manager is not None and cp.manager.state("ident") == "cold"
            # a cold model loaded by its first HTTP request: JSON tensors, then binary ones
            for binary in (False, True):
                result = client.infer(
                    "ident", [_tensor("INPUT0", x, binary)],
                    outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)],
                    request_id=f"r-{binary}")
                assert result.as_numpy("OUTPUT0").tolist() == x.tolist()
                assert result.get_response()["id"] == f"r-{binary}"
            assert cp.manager.ready_now("ident")
            words = np.array([[b"a", b"bcd"]], dtype=np.object_)
            lengths = client.infer("lengths", [_tensor("text", words, True)])
            assert lengths.as_numpy("n").tolist() == [[1, 3]]
            # served by the replica now: Triton's own answers
            assert client.get_model_metadata("ident")["versions"] == ["1"]
            stats = client.get_inference_statistics("ident")
            assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 2
            assert client.get_server_metadata()["name"] == "triton"
            # an unknown model: an error naming it
            with pytest.raises(InferenceServerException) as unknown:
                client.infer("nope", [_tensor("INPUT0", x, True)])
            assert "nope" in str(unknown.value.message())
            assert not client.is_model_ready("nope")
        finally:
            client.close()

    await asyncio.to_thread(drive)
    await cp.recorder.flush()
    assert cp.traffic is not None
    rows = cp.traffic.requests("ident")
    assert sorted((r.signature, r.outcome) for r in rows) == [
        ("INPUT0:FP32:2x3", "OK"), ("INPUT0:FP32:2x3", "OK")]
    assert cp.recorder.unknown_models == 1


async def test_bounds_deadlines_and_errors_on_http(start_cp: StartControlPlane,
                                                   repo: Path) -> None:
    add_identity(repo, "ident")
    add_identity(repo, "slow", init_sleep_s="3")
    (add_identity(repo, "boom") / "1" / "model.py").write_text(
        "import triton_python_backend_utils as pb_utils\n"
        "class TritonPythonModel:\n"
        "    def execute(self, requests):\n"
        "        raise ValueError('bad input value from ' + __file__)\n")
    cp = await start_cp(gateway={"max_request_bytes": 1 << 20}, scheduler={"enabled": False})
    assert cp.gateway_http_url is not None
    url = cp.gateway_http_url
    big = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1]}]}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        # over max_request_bytes: refused by name before the body is read
        over = await http.post("/v2/models/ident/infer", content=b"x" * ((1 << 20) + 1))
        assert over.status_code == 429
        assert over.json() == {"error": f"request of {(1 << 20) + 1} bytes is over "
                               "gateway.max_request_bytes (1048576 bytes; "
                               "WARMCTL_GATEWAY__MAX_REQUEST_BYTES)"}
        # malformed JSON and a body that is no inference request: 400, short reasons
        bad = await http.post("/v2/models/ident/infer", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"].startswith(
            "malformed JSON in the inference request")
        assert (await http.post("/v2/models/ident/infer", json={"x": 1})).json() == {
            "error": "the inference request has no 'inputs' list"}
        # the request's own timeout (microseconds) bounds the wait for a load: a 3 s load
        # does not fit in 0.3 s ...
        late = await http.post("/v2/models/slow/infer",
                               json={**big, "parameters": {"timeout": 300_000}})
        assert late.status_code == 504 and "deadline" in late.json()["error"]
        # ... but not a ready model's answer: plain Triton applies it only where the model's
        # queue policy allows, so a 30 us timeout (seconds meant, microseconds sent) is served
        assert await until(lambda: cp.fleet.ready_now("slow"), 30)
        ready = await http.post("/v2/models/slow/infer",
                                json={**big, "inputs": [{**big["inputs"][0], "data": [2.0]}],
                                      "parameters": {"timeout": 30}})
        assert ready.status_code == 200, ready.text
        # a model's runtime error: its type and message, no frames, no server path
        big["inputs"][0]["data"] = [1.0]  # type: ignore[index]
        boom = await http.post("/v2/models/boom/infer", json=big)
        assert boom.status_code in (400, 500) and "ValueError: bad input value" in \
            boom.json()["error"]
        assert str(repo) not in boom.text and "At:" not in boom.text
        # repository control and shared memory are refused without the settings
        load = await http.post("/v2/repository/models/ident/load")
        assert load.status_code == 403 and "ALLOW_REPOSITORY_CONTROL" in load.json()["error"]
        shm = await http.post("/v2/systemsharedmemory/region/r/register",
                              json={"key": "/k", "offset": 0, "byte_size": 16})
        assert shm.status_code == 403
        assert (await http.get("/v2/health/ready")).status_code == 200
        assert (await http.get("/v2/models/nope/ready")).status_code == 400
