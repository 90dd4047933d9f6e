"""A model whose requests crash its Triton is traced and quarantined; the other models on that
Triton keep being served, and its crashes do not exhaust the restart budget (issue 16).
A real tritonserver; the model kills its own server with SIGSEGV on a negative input, as a
native extension's bug would."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpc_aio
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import StartControlPlane
from tests.support.gateway import identity_input
from tests.support.repository import add_identity
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(240)

_CRASHER = '''
import os, signal, time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if (x < 0).any():
                os.kill(os.getppid(), signal.SIGSEGV)  # the stub's parent: tritonserver
                time.sleep(5)  # the server dies while this request is in it
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
'''


async def test_a_model_that_crashes_triton_twice_is_quarantined_and_the_rest_serve(
        start_cp: StartControlPlane, repo: Path) -> None:
    add_identity(repo, "crasher")
    (repo / "crasher" / "1" / "model.py").write_text(_CRASHER)
    add_identity(repo, "bystander")
    cp = await start_cp(scheduler={"enabled": False},
                        triton={"supervision": {"restart_delay_s": 0.2, "max_restarts": 2}})
    assert cp.gateway_url is not None and cp.supervisor is not None
    sup = cp.supervisor

    async def infer(client: grpc_aio.InferenceServerClient, model: str,
                    value: float) -> str:
        try:
            result = await client.infer(model, identity_input([[value]]), client_timeout=60)
        except InferenceServerException as exc:
            return f"{exc.status()}: {exc.message()}"
        out = result.as_numpy("OUTPUT0")
        return "ok" if out is not None and float(out[0][0]) == value else "wrong"

    async with grpc_aio.InferenceServerClient(cp.gateway_url) as client:
        assert await infer(client, "bystander", 1.0) == "ok"
        assert await infer(client, "crasher", 1.0) == "ok"
        for crash in (1, 2):
            answer = await infer(client, "crasher", -1.0)
            assert "UNAVAILABLE" in answer, answer  # in flight when its Triton died
            assert await until(lambda crash=crash: sup.restarts_total == crash and sup.serving
                               and cp.manager is not None
                               and cp.manager.ready_now("bystander"), 60)
        assert cp.manager is not None
        status = cp.manager.status("crasher")
        assert status.quarantined and "2 crashes" in status.quarantined
        assert "SIGSEGV" in status.quarantined
        assert cp.crashes.quarantined.keys() == {"crasher"}
        # the others serve; the quarantined model is refused with the reason, not loaded
        assert [await infer(client, "bystander", float(i)) for i in range(5)] == ["ok"] * 5
        refused = await infer(client, "crasher", 2.0)
        assert refused.startswith("StatusCode.UNAVAILABLE") and "quarantined" in refused
        assert not cp.manager.ready_now("crasher")
        ready = await client.is_model_ready("crasher")
        assert ready is False
        # both crashes are explained: the budget (2) is not spent, the instance is live
        assert sup.snapshot()["restarts_in_window"] == 0 and sup.serving
        # a crash of no known cause still counts
        assert sup.process is not None and sup.process.pid is not None
        os.kill(sup.process.pid, signal.SIGKILL)
        assert await until(lambda: sup.restarts_total == 3 and sup.serving, 60)
        assert sup.snapshot()["restarts_in_window"] == 1, (sup.restarts, list(cp.crashes.crashes))
        # the operator's load ends the quarantine
        await cp.fleet.load("crasher", trigger="api")
        assert await infer(client, "crasher", 3.0) == "ok"
        assert cp.manager.status("crasher").quarantined is None
        assert any(a.kind == "quarantine" and a.model == "crasher" for a in cp.fleet.actions)
