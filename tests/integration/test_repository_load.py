"""Triton's repository API through the gateway (where repository control is allowed): a load
with a ``config`` override is an operator's load of that config, as on plain Triton, through
both front doors; Triton's phrases where clients look for them. Real tritonservers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import StartControlPlane
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import add_identity

pytestmark = pytest.mark.timeout(180)


async def test_a_config_override_load_is_the_operators_load_of_that_config(
        repo: Path, start_cp: StartControlPlane) -> None:
    add_identity(repo, "ident")
    cp = await start_cp(gateway={"allow_repository_control": True})
    assert cp.manager is not None and cp.gateway_http_url is not None
    with gateway_client(cp) as c:
        await asyncio.to_thread(c.load_model, "ident")
        assert (await asyncio.to_thread(c.get_model_config, "ident")).config.max_batch_size == 8

        # not JSON: refused in Triton's words, and the loaded model keeps serving
        with pytest.raises(InferenceServerException) as bad:
            await asyncio.to_thread(c.load_model, "ident",
                                    config='"parameters": {"config": {{"max_batch_size": 1}}}')
        assert "failed to load" in (bad.value.message() or "")
        assert await asyncio.to_thread(c.is_model_ready, "ident")

        # a valid override: the model runs with it, and the record says our additions are off
        override = {"backend": "python", "max_batch_size": 16,
                    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
                    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
                    "instance_group": [{"kind": "KIND_CPU", "count": 1}]}
        await asyncio.to_thread(c.load_model, "ident", config=json.dumps(override))
        config = (await asyncio.to_thread(c.get_model_config, "ident")).config
        assert config.max_batch_size == 16
        last = cp.manager.store.events("ident", limit=1)[0]
        assert last.trigger == "repository" and last.outcome == "ok"
        assert "additions off" in str((last.details or {}).get("config_override"))
        served = await asyncio.to_thread(c.infer, "ident", identity_input([[2.0]]))
        assert served.as_numpy("OUTPUT0").tolist() == [[2.0]]

        # a load without one: back to the repository's config
        await asyncio.to_thread(c.load_model, "ident")
        assert (await asyncio.to_thread(c.get_model_config, "ident")).config.max_batch_size == 8

        # an unknown model: Triton's phrase
        with pytest.raises(InferenceServerException) as unknown:
            await asyncio.to_thread(c.load_model, "wrong_model_name")
        assert "failed to load" in (unknown.value.message() or "")
        with pytest.raises(InferenceServerException) as meta:
            await asyncio.to_thread(c.get_model_metadata, "wrong_model_name")
        assert "Request for unknown model" in (meta.value.message() or "")
        # file overrides write the Triton host's disk: refused by name
        with pytest.raises(InferenceServerException) as files:
            await asyncio.to_thread(c.load_model, "ident", config="{}",
                                    files={"file:1/model.py": b"x"})
        assert "file overrides" in (files.value.message() or "")

    # the HTTP door: the same load, the config as Triton's HTTP API takes it (a string);
    # tritonclient.http runs on gevent: one thread for the whole client
    url = cp.gateway_http_url.removeprefix("http://")

    def over_http() -> tuple[int, str, str]:
        http = httpclient.InferenceServerClient(url)
        try:
            http.load_model("ident", config=json.dumps({**override, "max_batch_size": 4}))
            batch = int(http.get_model_config("ident")["max_batch_size"])
            try:
                http.load_model("ident", config="{not json")
                bad = "loaded"
            except InferenceServerException as exc:
                bad = exc.message() or ""
            try:
                http.get_model_metadata("wrong_model_name")
                unknown = "found"
            except InferenceServerException as exc:
                unknown = exc.message() or ""
            return batch, bad, unknown
        finally:
            http.close()

    batch, bad_text, unknown_text = await asyncio.to_thread(over_http)
    assert batch == 4
    assert "failed to load" in bad_text
    assert "Request for unknown model" in unknown_text
