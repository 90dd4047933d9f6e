"""Every model kind Triton serves loads and serves through warmctl, with warm-up only where it
is safe (issue 9; the cases of shared/cases as tests with models written for them).

Three control planes: kinds that get no generated warm-up at all; traffic-shaped samples that
a probe must prove before they enter ``model_warmup``; configs Triton completes and BF16.
"""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

from controlplane.app import ControlPlane
from controlplane.lifecycle.states import ModelState
from tests.integration.conftest import StartControlPlane
from tests.support.kinds import add_categories, add_ensemble, add_model, add_sequence, add_sum
from tests.support.repository import add_decoupled


def tensor(name: str, array: np.ndarray[Any, Any], datatype: str) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array)
    return t


def infer(cp: ControlPlane, model: str, inputs: list[grpcclient.InferInput],
          **kwargs: Any) -> grpcclient.InferResult:
    assert cp.gateway_url is not None
    with grpcclient.InferenceServerClient(cp.gateway_url) as c:
        return c.infer(model, inputs, client_timeout=60, **kwargs)


async def fresh_load(cp: ControlPlane, model: str) -> dict[str, Any]:
    """Unload and load again (the next load applies what the last one proved); its details."""
    assert cp.manager is not None
    await cp.manager.unload(model, force=True)
    await cp.manager.load(model)
    assert cp.manager.state(model) is ModelState.READY
    return details_of(cp, model)


def details_of(cp: ControlPlane, model: str) -> dict[str, Any]:
    """The last load event's details, with the probe count (a column of its own)."""
    assert cp.manager is not None
    event = cp.manager.store.events(model, limit=1)[0]
    assert event.outcome == "ok" and event.details is not None
    counted = {} if event.probe_count is None else {"probe_count": event.probe_count}
    return {**event.details, **counted}


async def live_warmup(cp: ControlPlane, model: str) -> list[dict[str, Any]]:
    """The ``model_warmup`` Triton runs for ``model`` now."""
    assert cp.instance is not None
    config = await cp.instance.client.model_config(model)
    return list(config.get("model_warmup", []))


async def flush(cp: ControlPlane) -> None:
    assert cp.recorder is not None
    await cp.recorder.flush()


async def test_kinds_without_generated_warmup(repo: Path, start_cp: StartControlPlane) -> None:
    add_ensemble(repo, "pipe")
    add_sequence(repo, "acc")
    add_decoupled(repo, "dec")
    add_sum(repo, "off", "FP32", "4", extra="")
    own = ('model_warmup [ { name: "own" batch_size: 1 count: 1 inputs { key: "x" value: '
           '{ data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]\n')
    config = repo / "off" / "config.pbtxt"
    config.write_text(config.read_text() + own)
    cp = await start_cp(models={"off": {"warmup": False}}, warmup={"min_requests": 3})
    assert cp.manager is not None and cp.preparer is not None

    def traffic() -> list[Any]:
        z = infer(cp, "pipe", [tensor("x", np.zeros((2, 4), np.float32), "FP32")])
        sums = []
        for seq in (11, 12):
            for step in range(3):
                r = infer(cp, "acc", [tensor("x", np.ones((1, 1), np.float32), "FP32")],
                          sequence_id=seq, sequence_start=step == 0, sequence_end=step == 2)
                sums.append(float(r.as_numpy("sum")[0, 0]))
        offs = [infer(cp, "off", [tensor("x", np.ones((1, 4), np.float32), "FP32")])
                .as_numpy("y").tolist() for _ in range(4)]
        assert cp.gateway_url is not None
        answers: queue.Queue[Any] = queue.Queue()
        with grpcclient.InferenceServerClient(cp.gateway_url) as c:
            c.start_stream(callback=lambda result, error: answers.put((result, error)))
            c.async_stream_infer("dec", [tensor("INPUT0", np.array([1, 2, 3], np.float32),
                                                "FP32")], request_id="r1")
            streamed = [answers.get(timeout=60) for _ in range(3)]
            c.stop_stream()
        return [z.as_numpy("z").tolist(), sums, offs,
                [(e, None if r is None else r.as_numpy("OUTPUT0").tolist())
                 for r, e in streamed]]

    z, sums, offs, streamed = await asyncio.to_thread(traffic)
    assert z == [[2.0] * 4] * 2
    assert sums == [1.0, 2.0, 3.0] * 2
    assert offs == [[[4.0]]] * 4
    assert streamed == [(None, [1.0]), (None, [2.0]), (None, [3.0])]
    await flush(cp)

    expected = {"pipe": "none: ensemble", "acc": "none: stateful (sequence_batching)",
                "off": "none: off for this model", "dec": "none: decoupled"}
    for model, why in expected.items():
        stored = await cp.warmups.db.run(cp.preparer.regenerate,
                                         cp.manager.repository.spec(model), "test")
        assert stored.samples == [] and why.removeprefix("none: ") in stored.notes[0]
        details = await fresh_load(cp, model)
        assert details["warmup"].startswith(why), (model, details)
        assert details["probe"].startswith(why) and "probe_count" not in details
    # Triton runs no warm-up of ours: the ensemble has neither warm-up nor instance groups,
    # the switched-off model keeps exactly the operator's own sample
    assert cp.instance is not None
    pipe = await cp.instance.client.model_config("pipe")
    assert "model_warmup" not in pipe and not pipe.get("instance_group")
    assert await live_warmup(cp, "acc") == []
    assert [s["name"] for s in await live_warmup(cp, "off")] == ["own"]
    assert cp.manager.store.events("off", limit=1)[0].details["warmup_executions"] == 1  # type: ignore[index]
    # the stateful model still counts from the start of each sequence after its reload
    again = await asyncio.to_thread(traffic)
    assert again[1] == [1.0, 2.0, 3.0] * 2


async def test_samples_enter_model_warmup_only_once_a_probe_served_them(
    repo: Path, start_cp: StartControlPlane,
) -> None:
    add_categories(repo, "cat")  # 1-based ids, no range anywhere: never zeros
    add_categories(repo, "catp")  # the same, payloads sampled: ids from real requests
    add_model(repo, "big", "four_rows", '''
        backend: "python"
        max_batch_size: 64
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 16 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 16 ] } ]
        dynamic_batching { max_queue_delay_microseconds: 0 }
        instance_group [ { kind: KIND_CPU count: 1 } ]''')
    add_sum(repo, "nob", "FP16", "2, -1", max_batch_size=0)
    add_sum(repo, "resh", "FP32", "4", extra="reshape { shape: [ 2, 2 ] }")
    for name in ("words", "bigwords"):
        add_model(repo, name, "lengths", '''
            backend: "python"
            max_batch_size: 4
            input [ { name: "words" data_type: TYPE_STRING dims: [ 1 ] } ]
            output [ { name: "n" data_type: TYPE_FP32 dims: [ 1 ] } ]
            instance_group [ { kind: KIND_CPU count: 1 } ]
            parameters [ { key: "warmctl.example.words"
                           value: { string_value: "[\\"hello\\", \\"hi\\"]" } } ]''')
    add_model(repo, "opt", "optional", '''
        backend: "python"
        max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "mask" data_type: TYPE_FP32 dims: [ 4 ] optional: true } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
        dynamic_batching { }
        instance_group [ { kind: KIND_CPU count: 1 } ]''')
    with (repo / "bigwords" / "1" / "weights.bin").open("wb") as fh:
        fh.truncate(3 << 20)  # sparse: over the bound below without using the disk
    # no range learned from witnesses here (test_integer_ranges_learned_from_served_requests)
    cp = await start_cp(models={"catp": {"sample_payloads": True}},
                        warmup={"min_requests": 5, "max_file_override_bytes": 1 << 20},
                        traffic={"range_sample_every": 0})
    assert cp.manager is not None
    ids = np.array([[1, 2, 3, 50], [7, 8, 9, 10]], np.int64)

    def traffic() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for batch in (1, 2, 1, 2, 1, 2):
            for model in ("cat", "catp"):
                out[model] = infer(cp, model, [tensor("category", ids[:batch], "INT64")]
                                   ).as_numpy("score").astype(float).round(2).tolist()
            out["big"] = infer(cp, "big", [tensor("x", np.ones((batch, 16), np.float32),
                                                  "FP32")]).as_numpy("y").shape
            out["resh"] = infer(cp, "resh", [tensor("x", np.ones((batch, 4), np.float32),
                                                    "FP32")]).as_numpy("y").tolist()
            words = np.array([[b"hello"], [b"abc"]], dtype=object)[:batch]
            for model in ("words", "bigwords"):
                out[model] = infer(cp, model, [tensor("words", words, "BYTES")]
                                   ).as_numpy("n").tolist()
            out["opt"] = infer(cp, "opt", [tensor("x", np.ones((batch, 4), np.float32),
                                                  "FP32")]).as_numpy("y").tolist()
            out["nob"] = infer(cp, "nob", [tensor("x", np.full((2, 3), 0.5, np.float16),
                                                  "FP16")]).as_numpy("y").tolist()
        return out

    answers = await asyncio.to_thread(traffic)
    assert answers == {"cat": [[0.56], [0.34]], "catp": [[0.56], [0.34]], "big": (2, 16),
                       "resh": [[4.0], [4.0]], "words": [[5.0], [3.0]],
                       "bigwords": [[5.0], [3.0]], "nob": [3.0], "opt": [[4.0], [4.0]]}
    first = {m: details_of(cp, m) for m in answers}
    # before any traffic: no generated sample; probes only where their data is known safe
    for model, details in first.items():
        assert details["warmup_samples"] == 0 and details["warmup"].startswith("none"), model
        assert "probe_error" not in details, model
    assert "no known valid range" in first["cat"]["probe_notes"][0]
    assert "probe_count" not in first["cat"] and first["big"]["probe_count"] >= 1
    await flush(cp)

    # load 2: traffic-shaped samples, probed once each after a plain load
    second = {m: await fresh_load(cp, m) for m in answers}
    assert second["cat"]["warmup_pending"] == 0  # ids of unknown range: no sample at all
    for model in ("catp", "big", "nob", "resh", "words", "bigwords", "opt"):
        details = second[model]
        assert details["warmup_samples"] == 0 and details["warmup_pending"] >= 1, model
        assert details["probe_proven"] == details["warmup_pending"], (model, details)
        assert await live_warmup(cp, model) == []

    # load 3: the proven samples run as Triton's warm-up
    third = {m: await fresh_load(cp, m) for m in answers}
    for model in ("catp", "big", "nob", "resh", "words", "opt"):
        live = await live_warmup(cp, model)
        assert "additions_rejected" not in third[model], model
        assert live and third[model]["warmup_samples"] == len(live), model
        assert third[model]["warmup_executions"] == sum(s["count"] for s in live)
    assert {s["batch_size"] for s in await live_warmup(cp, "big")} <= {1, 2}  # never 64
    catp = cp.warmups.latest("catp")
    assert catp is not None and third["catp"]["warmup_files_bytes"] > 0
    for data in catp.files.values():  # real ids, not zeros
        assert set(np.frombuffer(data, np.int64)) <= set(range(1, 51))
    [nob] = await live_warmup(cp, "nob")
    assert nob["inputs"]["x"]["dims"] == ["2", "3"] and nob["inputs"]["x"]["data_type"] == \
        "TYPE_FP16"
    # the optional input is left out, as every request left it out
    assert all(set(s["inputs"]) == {"x"} for s in await live_warmup(cp, "opt"))
    # bigwords' samples need data files: the whole 3 MiB directory would travel
    assert await live_warmup(cp, "bigwords") == []
    assert "max_file_override_bytes" in third["bigwords"]["warmup_files_skipped"]
    assert await live_warmup(cp, "cat") == []
    assert await asyncio.to_thread(traffic) == answers


async def test_completed_configs_and_bf16(repo: Path, start_cp: StartControlPlane) -> None:
    add_model(repo, "auto", "auto", '''
        backend: "python"
        max_batch_size: 8
        dynamic_batching { }''')
    add_sum(repo, "bf", "BF16", "4")
    cp = await start_cp(triton={"disable_auto_complete_config": False},
                        warmup={"min_requests": 5})
    assert cp.manager is not None

    def traffic() -> tuple[Any, Any]:
        y = x = None
        for batch in (1, 2, 1, 2, 1, 2):
            y = infer(cp, "auto", [tensor("x", np.ones((batch, 4), np.float32), "FP32")])
            # tritonclient takes BF16 as float32 and truncates: 1.5 is exact in BF16
            x = infer(cp, "bf", [tensor("x", np.full((batch, 4), 1.5, np.float32), "BF16")])
        assert y is not None and x is not None
        return y.as_numpy("y").tolist(), x.as_numpy("y").tolist()

    assert await asyncio.to_thread(traffic) == ([[2.0] * 4] * 2, [[6.0], [6.0]])
    loaded = details_of(cp, "auto")
    assert loaded["warmup"].startswith("none yet: config.pbtxt names no inputs")
    assert loaded["completed_config"] is True and loaded["probe_ok"] >= 1
    await flush(cp)
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=60) as http:
        for model in ("auto", "bf"):
            answer = await http.post(f"/models/{model}/warmup-config/regenerate",
                                     params={"reload": "true"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["samples"] and not answer.json()["rejected"]
    for model in ("auto", "bf"):
        details = await fresh_load(cp, model)
        live = await live_warmup(cp, model)
        assert live and all(set(s["inputs"]) == {"x"} for s in live), (model, details)
    assert {s["inputs"]["x"]["data_type"] for s in await live_warmup(cp, "bf")} == {"TYPE_BF16"}
    assert await asyncio.to_thread(traffic) == ([[2.0] * 4] * 2, [[6.0], [6.0]])


async def test_a_batch_warmup_the_model_cannot_take_is_never_applied(
    repo: Path, start_cp: StartControlPlane,
) -> None:
    # Triton's warm-up of batch 2 hands the model 2 requests in one execute, which this model
    # refuses, while clients' requests of batch 2 pass: such a warm-up fails the load and
    # crashed tritonserver 2.51 here. The proof probe takes the warm-up's form (2 concurrent
    # requests of batch 1, grouped by the batcher), so the sample fails there, harmlessly.
    add_model(repo, "pairs", "one_at_a_time", '''
        backend: "python"
        max_batch_size: 8
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
        dynamic_batching { max_queue_delay_microseconds: 500000 }
        instance_group [ { kind: KIND_CPU count: 1 } ]''')
    cp = await start_cp(warmup={"min_requests": 3})
    assert cp.manager is not None

    def traffic() -> list[Any]:
        return [infer(cp, "pairs", [tensor("x", np.ones((2, 4), np.float32), "FP32")])
                .as_numpy("y").tolist() for _ in range(4)]

    assert await asyncio.to_thread(traffic) == [[[1.0] * 4] * 2] * 4
    await flush(cp)
    proving = await fresh_load(cp, "pairs")
    assert proving["warmup_pending"] == 1 and proving["probe_unproven"] == 1
    assert "2 requests in one execute" in proving["probe_error"]
    stored = cp.warmups.latest("pairs")
    assert stored is not None and [s["batch_size"] for s in stored.samples] == [2]
    again = await fresh_load(cp, "pairs")
    assert again["warmup"] == "none yet: no sample proven by a probe"
    assert again["warmup_pending"] == 0 and await live_warmup(cp, "pairs") == []
    async with httpx.AsyncClient(base_url=cp.admin_url) as http:
        view = (await http.get("/models/pairs/warmup-config")).json()
    assert view["sample_states"] == {"s0_b2": "failed"} and not view["rejected"]
    assert cp.instance is not None and await cp.instance.client.is_live()
    assert await asyncio.to_thread(traffic) == [[[1.0] * 4] * 2] * 4


async def test_integer_ranges_learned_from_served_requests(
    repo: Path, start_cp: StartControlPlane,
) -> None:
    # 1-based ids, no warmctl.input_range, no payload samples: the range comes from the
    # requests Triton served, read by the gateway one in `range_sample_every`
    add_categories(repo, "cat")
    cp = await start_cp(warmup={"min_requests": 5}, traffic={"range_sample_every": 2})
    assert cp.manager is not None and cp.traffic is not None
    ids = np.array([[1, 2, 3, 50], [7, 8, 9, 10]], np.int64)

    def traffic() -> None:
        for batch in (1, 2, 1, 2, 1, 2, 2, 2):
            infer(cp, "cat", [tensor("category", ids[:batch], "INT64")])

    await asyncio.to_thread(traffic)
    await flush(cp)
    low, high = cp.traffic.value_ranges("cat")["category"]
    assert 1 <= low <= 7 and high == 51  # every witness holds 50; the low end 1 or 7
    assert cp.traffic.samples("cat") == []  # read for the range, never stored

    second = await fresh_load(cp, "cat")
    assert second["warmup_pending"] >= 1 and second["probe_proven"] == second["warmup_pending"]
    third = await fresh_load(cp, "cat")
    live = await live_warmup(cp, "cat")
    assert live and third["warmup_samples"] == len(live) and "additions_rejected" not in third
    stored = cp.warmups.latest("cat")
    assert stored is not None and stored.files
    for data in stored.files.values():  # inside what traffic carried: never 0
        assert set(np.frombuffer(data, np.int64)) <= set(range(low, high))
    assert cp.manager.state("cat") is ModelState.READY
