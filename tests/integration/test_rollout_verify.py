"""Verification of a version 2 served beside version 1 by a real tritonserver.

One Triton for the module (starting one per case would cost more than the cases): a
Python-backend model per kind of version 2, both versions loaded together through a config
override with ``version_policy { specific { versions: [1, 2] } }``. Samples are recorded
payloads read back through :func:`samples_for`, with a BYTES input, so the whole path from
the traffic store to Triton's answers is exercised.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from controlplane.rollouts.verify import (
    Sample,
    Verdict,
    VerifyOptions,
    samples_for,
    verify_version,
)
from controlplane.store.database import Database
from controlplane.tensors import TensorShape, encode_bytes_elements
from controlplane.traffic.observation import OK, Observation
from controlplane.traffic.store import TrafficStore
from controlplane.triton.client import TritonClient
from controlplane.triton.process import TritonProcess
from controlplane.triton.repository import ModelRepository, ModelSpec
from controlplane.warmup.configs import WarmupStore
from tests.integration.conftest import start_triton

# Version 1 doubles x and echoes TAG; version 2 does what the ``v2`` parameter says. Both
# sleep ``base_ms`` per request, so latency comparisons measure the model, not the noise.
_MODEL = textwrap.dedent('''
    import json, time
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            config = json.loads(args["model_config"])
            params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
            self.kind = params["v2"] if args["model_version"] == "2" else "good"
            self.sleep_s = float(params.get("base_ms", "5")) / 1e3
            if self.kind == "slow":
                self.sleep_s *= 10

        def execute(self, requests):
            responses = []
            for request in requests:
                time.sleep(self.sleep_s)
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                tag = pb_utils.get_input_tensor_by_name(request, "TAG").as_numpy()
                if self.kind == "errors" and float(x.max()) > 5.0:
                    # one error object per response: a shared one crashes Triton 2.51
                    responses.append(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"value {float(x.max())} above 5")))
                    continue
                y = x * 2
                if self.kind == "nan":
                    y = y.copy()
                    y.flat[0] = np.nan
                elif self.kind == "disagree":
                    y = y + 0.5
                responses.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUTPUT0", y.astype(np.float32)),
                    pb_utils.Tensor("LABEL", tag)]))
            return responses
''')

KINDS = ("good", "nan", "slow", "errors", "disagree")


def _config(name: str, kind: str) -> str:
    return textwrap.dedent(f'''
        name: "{name}"
        backend: "python"
        max_batch_size: 8
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }},
                {{ name: "TAG" data_type: TYPE_STRING dims: [ 1 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }},
                 {{ name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        parameters {{ key: "v2" value: {{ string_value: "{kind}" }} }}
    ''')


def _add_model(repo: Path, kind: str) -> None:
    model_dir = repo / f"m_{kind}"
    for version in ("1", "2"):
        (model_dir / version).mkdir(parents=True)
        (model_dir / version / "model.py").write_text(_MODEL)
    (model_dir / "config.pbtxt").write_text(_config(f"m_{kind}", kind))


def _both_versions(spec: ModelSpec) -> dict[str, object]:
    return {**spec.config, "version_policy": {"specific": {"versions": [1, 2]}}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonProcess, Path]]:
    """Triton serving versions 1 and 2 of every ``m_<kind>``."""
    tmp = tmp_path_factory.mktemp("verify")
    repo = tmp / "repository"
    repo.mkdir()
    for kind in KINDS:
        _add_model(repo, kind)
    process = start_triton(tmp, repo)

    async def load_all() -> None:
        client = TritonClient(process.grpc_url, call_timeout_s=5, load_timeout_s=60)
        repository = ModelRepository(repo)
        try:
            for kind in KINDS:
                await client.load(f"m_{kind}",
                                  config=_both_versions(repository.spec(f"m_{kind}")))
                states = {(e.version, e.state) for e in await client.model_index(f"m_{kind}")}
                assert states == {("1", "READY"), ("2", "READY")}, states
        finally:
            await client.close()

    try:
        asyncio.run(load_all())
        yield process, repo
    finally:
        process.stop()


def _record(traffic: TrafficStore, model: str, values: list[float]) -> None:
    """One recorded request per value: INPUT0 [1, 4] filled with it, TAG [1, 1]."""
    observations = []
    for n, value in enumerate(values):
        x = np.full((1, 4), value, np.float32).tobytes()
        tag = encode_bytes_elements([f"tag-{n}".encode()])
        inputs = (TensorShape("INPUT0", "FP32", (1, 4)), TensorShape("TAG", "BYTES", (1, 1)))
        observations.append(Observation(
            model, "", inputs, time.time() + n, 0.001, OK, False, None,
            payload=(x + tag, ((0, len(x)), (len(x), len(x) + len(tag))))))
    traffic.write(observations)


async def _samples(database: Database, repo: Path, model: str,
                   values: list[float]) -> tuple[list[Sample], ModelSpec]:
    traffic = TrafficStore(database, "default")
    _record(traffic, model, values)
    spec = ModelRepository(repo).spec(model)
    samples = await samples_for(model, spec, traffic, WarmupStore(database), limit=32)
    assert [s.source for s in samples] == ["recorded"] * len(values)
    return samples, spec


async def _verify(served: tuple[TritonProcess, Path], database: Database, kind: str,
                  options: VerifyOptions, values: list[float] | None = None) -> Verdict:
    process, repo = served
    model = f"m_{kind}"
    samples, spec = await _samples(database, repo, model, values or [0.0, 1.0, 2.5, 4.0])
    client = TritonClient(process.grpc_url, call_timeout_s=5)
    try:
        return await verify_version(client, model, "1", "2", samples, spec, options)
    finally:
        await client.close()


async def test_good_version_passes(served: tuple[TritonProcess, Path],
                                   database: Database) -> None:
    verdict = await _verify(served, database, "good", VerifyOptions(atol=1e-6, rtol=0.0))
    assert verdict.passed, verdict
    assert verdict.samples == 4 and verdict.failures == ()
    assert verdict.active_p50_s is not None and verdict.target_p50_s is not None
    # both sleep 5 ms per request: the converged p50s say so
    assert 0.004 < verdict.active_p50_s < 0.05 and 0.004 < verdict.target_p50_s < 0.05
    assert "4 recorded samples" in verdict.reason and "agree" in verdict.reason


async def test_nan_outputs_fail(served: tuple[TritonProcess, Path], database: Database) -> None:
    verdict = await _verify(served, database, "nan", VerifyOptions())
    assert not verdict.passed
    assert "NaN" in verdict.reason and "OUTPUT0" in verdict.reason
    assert verdict.failures and "NaN" in verdict.failures[0]


async def test_ten_times_slower_fails_on_latency(served: tuple[TritonProcess, Path],
                                                 database: Database) -> None:
    verdict = await _verify(served, database, "slow", VerifyOptions(rounds=3))
    assert not verdict.passed
    assert verdict.reason.startswith("v2 latency"), verdict.reason
    assert verdict.active_p50_s is not None and verdict.target_p50_s is not None
    assert verdict.target_p50_s > 5 * verdict.active_p50_s


async def test_errors_on_part_of_the_inputs_fail(served: tuple[TritonProcess, Path],
                                                 database: Database) -> None:
    verdict = await _verify(served, database, "errors", VerifyOptions(),
                            values=[1.0, 2.0, 9.0, 3.0])
    assert not verdict.passed
    assert "v2 failed" in verdict.reason and "above 5" in verdict.reason
    # samples go newest first: 3.0 passed, then 9.0 failed
    assert "(sample 2 of 4, round 1)" in verdict.reason
    assert verdict.samples == 2


async def test_disagreement_fails_with_atol_and_passes_without(
        served: tuple[TritonProcess, Path], database: Database) -> None:
    strict = await _verify(served, database, "disagree", VerifyOptions(atol=0.01))
    assert not strict.passed
    assert "disagrees with the active version's" in strict.reason
    assert "max |diff| 0.5" in strict.reason
    lenient = await _verify(served, database, "disagree", VerifyOptions())
    assert lenient.passed, lenient
