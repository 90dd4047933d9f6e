"""TritonClient against a real tritonserver: loads, overrides, unloads, errors, timeouts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from controlplane.errors import DeadlineExceeded, ModelLoadFailed, TritonUnavailable
from controlplane.triton.client import TritonClient
from controlplane.triton.process import TritonProcess, free_port
from tests.support.repository import (
    add_example,
    add_identity,
    add_missing_weights,
    add_triton_rejected,
    identity_config,
)


def _infer_identity(url: str, model: str, values: list[float]) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as c:
        x = np.array([values], dtype=np.float32)
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = c.infer(model, [inp], client_timeout=10)
        out = result.as_numpy("OUTPUT0")
        assert out is not None
        return out


async def test_load_infer_unload_example_model(
    repo: Path, triton: TritonProcess, client: TritonClient
) -> None:
    add_example(repo, "thumbnail_scorer")
    await client.load("thumbnail_scorer")
    assert await client.is_model_ready("thumbnail_scorer")

    features = np.linspace(-1, 1, 2 * 256, dtype=np.float32).reshape(2, 256)
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        inp = grpcclient.InferInput("image_features", [2, 256], "FP32")
        inp.set_data_from_numpy(features)
        scores = c.infer("thumbnail_scorer", [inp], client_timeout=10).as_numpy("score")
    expected = torch.jit.load(str(repo / "thumbnail_scorer" / "1" / "model.pt"))(
        torch.from_numpy(features)).detach().numpy()
    assert scores is not None and scores.shape == (2, 1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)

    await client.unload("thumbnail_scorer")
    # unload returned only once Triton really released it
    [entry] = await client.model_index("thumbnail_scorer")
    assert (entry.state, entry.reason) == ("UNAVAILABLE", "unloaded")
    with pytest.raises(InferenceServerException):
        _infer_identity(triton.grpc_url, "thumbnail_scorer", [1.0])


async def test_config_override_replaces_config_pbtxt(
    repo: Path, triton: TritonProcess, client: TritonClient
) -> None:
    add_identity(repo, "ident")
    await client.load("ident", config={
        "name": "ident", "backend": "python", "max_batch_size": 2,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    })
    assert (await client.model_config("ident"))["max_batch_size"] == 2
    await client.load("ident")  # a plain load drops the override again
    assert (await client.model_config("ident"))["max_batch_size"] == 8


async def test_file_override_replaces_the_model_directory(
    repo: Path, triton: TritonProcess, client: TritonClient
) -> None:
    model_dir = add_identity(repo, "ident")
    doubled = (model_dir / "1" / "model.py").read_text().replace(
        'pb_utils.Tensor("OUTPUT0", x)', 'pb_utils.Tensor("OUTPUT0", x * 2)')
    config = identity_config("ident")
    from controlplane.triton.repository import config_to_json, parse_config

    await client.load("ident", config=config_to_json(parse_config(config)),
                      files={"1/model.py": doubled.encode()})
    assert _infer_identity(triton.grpc_url, "ident", [1.0, 2.0]).tolist() == [[2.0, 4.0]]
    # the repository on disk is untouched
    assert 'Tensor("OUTPUT0", x)' in (model_dir / "1" / "model.py").read_text()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # Triton answers only this; the manager adds the reason from Triton's log
        (add_triton_rejected, "failed to poll from model repository"),
        (add_missing_weights, "no model file"),
        (lambda repo, name: add_identity(repo, name, init_fail="exploded on purpose"),
         "exploded on purpose"),
    ],
)
async def test_failed_load_carries_tritons_reason(
    repo: Path, triton: TritonProcess, client: TritonClient, build: object, message: str
) -> None:
    build(repo, "broken")  # type: ignore[operator]
    with pytest.raises(ModelLoadFailed, match=message) as info:
        await client.load("broken")
    assert info.value.model == "broken"
    assert not client.busy("broken")


async def test_a_load_error_longer_than_grpcs_default_metadata_limit_arrives_whole(
    repo: Path, triton: TritonProcess, client: TritonClient
) -> None:
    # a traceback-sized reason: over gRPC's default 16 KiB hard limit on received metadata
    add_identity(repo, "verbose", init_fail="x" * 20_000 + " the root cause at the end")
    with pytest.raises(ModelLoadFailed) as info:
        await client.load("verbose")
    assert "the root cause at the end" in info.value.reason
    assert info.value.reason.count("x") >= 20_000


async def test_unknown_model_load_fails_clearly(triton: TritonProcess,
                                               client: TritonClient) -> None:
    with pytest.raises(ModelLoadFailed, match="'nope'"):
        await client.load("nope")


async def test_hanging_load_is_cut_by_its_timeout_and_frees_the_lock(
    repo: Path, triton: TritonProcess, client: TritonClient
) -> None:
    add_identity(repo, "hangs", init_sleep_s="60")
    add_identity(repo, "fine")
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="load of 'hangs' timed out after 2s"):
        await client.load("hangs", timeout_s=2)
    assert time.monotonic() - t0 < 5
    assert not client.busy("hangs")
    await client.load("fine")  # other models are not held up
    t1 = time.monotonic()
    with pytest.raises(DeadlineExceeded):  # a retry is bounded too: no lock left stuck
        await client.load("hangs", timeout_s=1)
    assert time.monotonic() - t1 < 4


async def test_one_load_in_flight_per_model(
    repo: Path, triton: TritonProcess, client: TritonClient, tmp_path: Path
) -> None:
    log = tmp_path / "inits.log"
    add_identity(repo, "ident", init_log=str(log), init_sleep_s="0.5")
    busy_seen = []

    async def watch() -> None:
        await asyncio.sleep(0.2)
        busy_seen.append(client.busy("ident"))

    await asyncio.gather(client.load("ident"), watch())
    assert busy_seen == [True]
    assert not client.busy("ident")
    assert len(log.read_text().splitlines()) == 1


async def test_unreachable_triton_is_unavailable_quickly() -> None:
    client = TritonClient(f"127.0.0.1:{free_port()}", call_timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises((TritonUnavailable, DeadlineExceeded)):
        await client.index()
    assert time.monotonic() - t0 < 4
    await client.close()
