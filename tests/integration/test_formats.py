"""Every model format the plugin serves, in a real Triton under a real control plane (issue 12).

The example models ``history_ranker_*`` (built by ``model_repository/build_models.py`` at
install, with the exported dims read from their configs) are copied into the test's
repository. Two control planes: the formats (TorchScript, ExportedProgram, AOTInductor, and
torch.compile failures), and torch.compile with its cache (the first load compiles and saves,
the second restores) -- the only test that pays for compiling, twice. That a corrupted or
mismatched entry is a miss (and so compiles) is tested without compiling, in
``tests/unit/triton_backends/test_plugin_cache.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from controlplane.app import ControlPlane
from controlplane.lifecycle.states import ModelState
from tests.conftest import ROOT
from tests.integration.conftest import StartControlPlane
from tests.integration.test_model_kinds import details_of, fresh_load, live_warmup

EXAMPLES = ROOT / "model_repository"
#: (batch, history length) pairs within the config (max_batch_size 32, history [-1])
SHAPES = [(1, 1), (3, 5), (32, 40)]


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_models", EXAMPLES / "build_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_example(builder: ModuleType, repo: Path, name: str, as_name: str | None = None,
                 extra_params: str = "") -> Path:
    """The example's folder under ``repo`` (renamed, parameters added); fails -- never
    skips -- when the install did not build its model file."""
    source = builder.target_path(EXAMPLES, name)
    assert source.is_file(), (
        f"{source} is missing: run `.venv/bin/python model_repository/build_models.py` "
        "(AOTInductor and torch.compile need a C++ compiler, g++)")
    target = repo / (as_name or name)
    (target / "1").mkdir(parents=True)
    config = (EXAMPLES / name / "config.pbtxt").read_text()
    config = config.replace(f'name: "{name}"', f'name: "{as_name or name}"')
    if extra_params:
        config = config.rstrip().removesuffix("]") + extra_params + "\n]\n"
    (target / "config.pbtxt").write_text(config)
    shutil.copy(source, target / "1" / source.name)
    return target


def infer(cp: ControlPlane, model: str, history: np.ndarray[Any, Any],
          context: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    assert cp.gateway_url is not None
    inputs = [grpcclient.InferInput("history", list(history.shape), "INT64"),
              grpcclient.InferInput("context", list(context.shape), "FP32")]
    inputs[0].set_data_from_numpy(history)
    inputs[1].set_data_from_numpy(context)
    with grpcclient.InferenceServerClient(cp.gateway_url) as c:
        result = c.infer(model, inputs, client_timeout=120)
    out = result.as_numpy("score")
    assert out is not None
    return out


async def answers_like_eager(cp: ControlPlane, model: str, eager: torch.nn.Module) -> None:
    """At every shape of SHAPES the served scores equal the eager module's."""
    rng = np.random.default_rng(7)
    for batch, length in SHAPES:
        history = rng.integers(0, 50_000, (batch, length), dtype=np.int64)
        context = rng.standard_normal((batch, 16), dtype=np.float32)
        served = await asyncio.to_thread(infer, cp, model, history, context)
        with torch.inference_mode():
            want = eager(torch.from_numpy(history), torch.from_numpy(context)).numpy()
        assert served.shape == (batch, 1)
        np.testing.assert_allclose(served, want, rtol=1e-4, atol=1e-5)


async def test_each_format_loads_warms_and_answers_like_eager(
    builder: ModuleType, repo: Path, start_cp: StartControlPlane,
) -> None:
    copy_example(builder, repo, "history_ranker_export")
    copy_example(builder, repo, "history_ranker_aoti")
    ts = copy_example(builder, repo, "history_ranker_export", "history_ranker_ts")
    (ts / "1" / "model.pt2").unlink()
    torch.jit.script(builder.module("history_ranker_export")).save(str(ts / "1" / "model.pt"))
    # compile failures cost nothing to provoke: the backend does not exist
    bad_backend = ',\n  { key: "torch_compile" value: { string_value: "true" } },\n' \
        '  { key: "torch_compile_backend" value: { string_value: "no_such_backend" } }'
    copy_example(builder, repo, "history_ranker_export", "compile_falls_back", bad_backend)
    copy_example(builder, repo, "history_ranker_export", "compile_must_work", bad_backend + (
        ',\n  { key: "torch_compile_fallback" value: { string_value: "fail" } }'))
    cp = await start_cp(lifecycle={"retry_initial_s": 0}, warmup={"min_requests": 3})
    assert cp.manager is not None and cp.recorder is not None
    eager = builder.module("history_ranker_export")

    models = ("history_ranker_ts", "history_ranker_export", "history_ranker_aoti",
              "compile_falls_back")
    # loaded together: Triton loads different models in parallel (each stub imports torch)
    await asyncio.gather(*(cp.manager.load(model) for model in models))
    for model in models:
        assert cp.manager.state(model) is ModelState.READY, cp.manager.status(model)
        details = details_of(cp, model)
        # no traffic yet: the generated probe warmed it at the config's shapes before READY
        assert details["probe_ok"] >= 3 and "probe_error" not in details, details
        assert details["load_phases"]["read_weights"] > 0
        assert details["load_phases"]["first_execute"] > 0
        await answers_like_eager(cp, model, eager)
    # the traffic above shapes the warm-up: proven by a probe at the next load, then
    # Triton runs it at the one after (the lifecycle of every generated warm-up)
    await cp.recorder.flush()
    await fresh_load(cp, "history_ranker_aoti")
    warmed = await fresh_load(cp, "history_ranker_aoti")
    assert warmed["warmup_samples"] >= 1 and warmed["warmup_executions"] >= 1, warmed
    warmup = await live_warmup(cp, "history_ranker_aoti")
    assert {s["batch_size"] for s in warmup} & {3, 32}, warmup
    await answers_like_eager(cp, "history_ranker_aoti", eager)
    assert details_of(cp, "compile_falls_back")["compile_cache"]["state"] == "compile_failed"
    assert "compile_cache" not in details_of(cp, "history_ranker_aoti")

    with pytest.raises(Exception, match="torch_compile_fallback: fail"):
        await cp.manager.load("compile_must_work")
    assert cp.manager.state("compile_must_work") is ModelState.FAILED
    assert "no_such_backend" in (cp.manager.status("compile_must_work").reason or "")


async def test_compiled_code_is_saved_then_restored(
    builder: ModuleType, repo: Path, start_cp: StartControlPlane,
) -> None:
    model = "history_ranker_compiled"
    copy_example(builder, repo, model)
    cp = await start_cp()
    assert cp.manager is not None and cp.admin_url
    eager = builder.module(model)

    await cp.manager.load(model)
    first = details_of(cp, model)
    assert first["compile_cache"]["state"] == "miss" and first["compile_cache"]["bytes"] > 0
    await answers_like_eager(cp, model, eager)
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=10) as http:
        shown = (await http.get(f"/models/{model}")).json()["compile_cache"]
    # the requests above compiled shapes the probe had not sent: saved as they came
    assert len(shown) == 1 and shown[0]["bytes"] >= first["compile_cache"]["bytes"]
    assert shown[0]["key"] == first["compile_cache"]["key"]
    assert shown[0]["fields"]["torch"] == torch.__version__

    second = await fresh_load(cp, model)
    assert second["compile_cache"]["state"] == "hit"
    assert second["compile_cache"]["key"] == first["compile_cache"]["key"]
    assert second["load_phases"]["compile"] < first["load_phases"]["compile"] * 0.5, (
        first["load_phases"], second["load_phases"])
    await answers_like_eager(cp, model, eager)

    # the plan's cold start follows the cache: cheap while the entry is there, not after
    assert cp.cold_starts is not None and cp.compile_cache is not None
    measured = cp.cold_starts.measured(model)
    assert set(measured) == {"cached", "uncached"}
    assert cp.cold_starts.expected_load_s(model, None) == measured["cached"]
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=10) as http:
        assert (await http.delete(f"/models/{model}/compile-cache")).json() == {"removed": 1}
        assert (await http.get(f"/models/{model}")).json()["compile_cache"] == []
        assert (await http.delete("/models/nope/compile-cache")).status_code == 404
    assert cp.cold_starts.expected_load_s(model, None) == measured["uncached"]
