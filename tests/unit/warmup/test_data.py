"""Warm-up data is valid: zeros where they are, in-range ids, real payloads, exact file sizes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from controlplane.errors import ConfigError
from controlplane.triton.repository import ModelSpec
from controlplane.warmup.data import probe_inputs, validate_plan
from controlplane.warmup.gen_tensors import decode_bytes_elements, encode_bytes_elements
from controlplane.warmup.generate import generate_warmup
from controlplane.warmup.types import ShapeCount, WarmupPlan, WarmupSettings
from tests.unit.warmup.helpers import example_spec, make_spec, payload, row

RANGED = {"input_range.ids": "0:100000"}


def ranker(parameters: dict[str, str] | None = None) -> ModelSpec:
    return make_spec([("ids", "INT64", [20]), ("ctx", "FP32", [32])], max_batch_size=16,
                     parameters=parameters)


def ranker_rows() -> list[ShapeCount]:
    return [row(n, ("ids", "INT64", (b, 20)), ("ctx", "FP32", (b, 32)))
            for n, b in ((50, 1), (30, 4), (20, 16))]


def file_values(plan: WarmupPlan, name: str, dtype: str = "<i8") -> np.ndarray:
    return np.frombuffer(plan.files[f"warmup/{name}"], dtype=dtype)


def test_zero_data_where_zero_is_valid() -> None:
    plan = generate_warmup(ranker(RANGED), ranker_rows())
    assert plan.files == {}
    assert all(d.source == "zero" for s in plan.samples for d in s.inputs.values())
    for arrays in probe_inputs(plan, ranker(RANGED)):
        assert np.all(np.isfinite(arrays["ctx"])) and not np.any(arrays["ids"])


def test_a_config_range_excluding_zero_gets_in_range_ids() -> None:
    spec = ranker({"input_range.ids": "500:1000"})
    plan = generate_warmup(spec, ranker_rows())
    # one file for the one shape, shared by its three batch sizes
    assert list(plan.files) == ["warmup/s0_ids.bin"]
    assert {s.inputs["ids"].file for s in plan.samples} == {"s0_ids.bin"}
    assert {s.inputs["ctx"].source for s in plan.samples} == {"zero"}
    ids = file_values(plan, "s0_ids.bin")
    assert ids.size == 20 and ids.min() >= 500 and ids.max() < 1000
    assert len(set(ids.tolist())) > 1  # drawn, not a constant
    assert any("ids drawn uniformly in [500, 1000)" in n for n in plan.notes)


def test_value_ranges_override_the_config() -> None:
    plan = generate_warmup(ranker(RANGED), ranker_rows(), value_ranges={"ids": (10, 20)})
    ids = file_values(plan, "s0_ids.bin")
    assert ids.min() >= 10 and ids.max() < 20
    narrowed = generate_warmup(ranker({"input_range.ids": "5:9"}), ranker_rows(),
                               value_ranges={"ids": (-3, 3)})
    assert narrowed.files == {}


@pytest.mark.parametrize(("datatype", "text", "low", "high", "dtype"), [
    ("INT32", "-5:-1", -5, -1, "<i4"),
    ("UINT8", "1:1000", 1, 256, "<u1"),  # clamped to what UINT8 holds
    ("INT16", "-40000:-1", -32768, -1, "<i2"),
])
def test_ranges_in_other_integer_types(datatype: str, text: str, low: int, high: int,
                                       dtype: str) -> None:
    spec = make_spec([("v", datatype, [64])], parameters={"input_range.v": text})
    plan = generate_warmup(spec, [row(1, ("v", datatype, (1, 64)))])
    values = file_values(plan, "s0_v.bin", dtype)
    assert values.size == 64 and values.min() >= low and values.max() < high


@pytest.mark.parametrize("text", ["100", "a:b", "10:10", "300:400"])
def test_malformed_or_empty_ranges_are_config_errors(text: str) -> None:
    spec = make_spec([("v", "UINT8", [4])], parameters={"input_range.v": text})
    with pytest.raises(ConfigError, match=r"input_range\.v|input 'v'"):
        generate_warmup(spec, [])


def test_seed_changes_drawn_ids_only() -> None:
    spec = ranker({"input_range.ids": "500:1000"})
    a = generate_warmup(spec, ranker_rows(), settings=WarmupSettings(seed=1))
    b = generate_warmup(spec, ranker_rows(), settings=WarmupSettings(seed=2))
    assert a.files != b.files and a.model_warmup() == b.model_warmup()


def test_bool_and_float_inputs_are_zero() -> None:
    spec = make_spec([("m", "BOOL", [3]), ("h", "FP16", [2]), ("d", "FP64", [2]),
                      ("b", "BF16", [2])])
    plan = generate_warmup(spec, [row(5, ("m", "BOOL", (2, 3)), ("h", "FP16", (2, 2)),
                                      ("d", "FP64", (2, 2)), ("b", "BF16", (2, 2)))])
    [arrays, *_] = probe_inputs(plan, spec)
    assert arrays["m"].dtype == np.bool_ and arrays["h"].dtype == np.float16
    # numpy has no bfloat16: BF16 travels as float32 that tritonclient truncates
    assert arrays["b"].dtype == np.float32 and not arrays["b"].any()
    assert arrays["d"].shape == (2, 2) and plan.files == {}
    assert plan.model_warmup()[0]["inputs"]["b"] == {
        "data_type": "TYPE_BF16", "dims": ["2"], "zero_data": True}


def test_bytes_without_payload_or_examples_cannot_be_warmed() -> None:
    spec = make_spec([("text", "BYTES", [2])])
    plan = generate_warmup(spec, [row(10, ("text", "BYTES", (1, 2)))])
    assert plan.samples == () and plan.coverage == 0.0
    assert any("no warmctl.example.text" in n for n in plan.notes)
    assert generate_warmup(spec, []).samples == ()


def test_bytes_from_config_examples() -> None:
    spec = make_spec([("text", "BYTES", [3])], parameters={"example.text": '["hello", "wörld"]'})
    plan = generate_warmup(spec, [row(10, ("text", "BYTES", (2, 3)))])
    content = plan.files["warmup/s0_text.bin"]
    assert decode_bytes_elements(content) == [b"hello", "wörld".encode(), b"hello"]
    [arrays] = probe_inputs(plan, spec)
    assert arrays["text"].dtype == object and arrays["text"].shape == (2, 3)
    assert arrays["text"][1].tolist() == [b"hello", "wörld".encode(), b"hello"]


@pytest.mark.parametrize("value", ["not json", "[]", "[1, 2]", '"one"'])
def test_malformed_examples_are_config_errors(value: str) -> None:
    spec = make_spec([("text", "BYTES", [1])], parameters={"example.text": value})
    with pytest.raises(ConfigError, match=r"example\.text"):
        generate_warmup(spec, [])


def test_bytes_from_a_payload_take_its_first_batch_element() -> None:
    spec = make_spec([("text", "BYTES", [2])])
    sample = payload(text=np.array([[b"ab", b"c"], [b"longer", b""]], dtype=object))
    plan = generate_warmup(spec, [row(10, ("text", "BYTES", (2, 2)))], samples=[sample])
    assert plan.files == {"warmup/s0_text.bin": encode_bytes_elements([b"ab", b"c"])}
    assert plan.samples[0].batch_size == 2


def test_payload_samples_become_files_with_exact_bytes() -> None:
    spec = ranker(RANGED)
    ids = np.arange(40, dtype=np.int64).reshape(2, 20) + 7
    ctx = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    other = payload(ids=np.ones((1, 20), dtype=np.int64), ctx=np.ones((1, 31), np.float32))
    plan = generate_warmup(spec, ranker_rows(), samples=[other, payload(ids=ids, ctx=ctx)])
    assert plan.files == {"warmup/s0_ids.bin": ids[0].tobytes(),
                          "warmup/s0_ctx.bin": ctx[0].tobytes()}
    for sample, arrays in zip(plan.samples, probe_inputs(plan, spec), strict=True):
        assert arrays["ids"].shape == (sample.batch_size, 20)
        assert np.array_equal(arrays["ids"], np.repeat(ids[:1], sample.batch_size, axis=0))
        assert np.array_equal(arrays["ctx"][-1], ctx[0])


def test_invalid_payload_values_fall_back_to_synthetic_data() -> None:
    spec = ranker(RANGED)
    ids = np.full((1, 20), 100_000, dtype=np.int64)  # one past the embedding
    ctx = np.full((1, 32), np.nan, dtype=np.float32)
    bad_ids = payload(ids=ids, ctx=np.zeros((1, 32), np.float32))
    bad_ctx = payload(ids=np.zeros((1, 20), np.int64), ctx=ctx)
    plan = generate_warmup(spec, ranker_rows(), samples=[bad_ids, bad_ctx])
    assert plan.files == {}
    assert any("2 recorded payload(s) of shape [[20], [32]] not used, e.g. 'ids': values "
               "outside [0, 100000)" in n for n in plan.notes)
    good = payload(ids=np.ones((3, 20), np.int64), ctx=np.ones((3, 32), np.float32))
    plan = generate_warmup(spec, ranker_rows(), samples=[bad_ctx, good])
    assert plan.files["warmup/s0_ids.bin"] == np.ones(20, np.int64).tobytes()


@pytest.mark.parametrize("model", ["shortform_ranker", "longform_ranker", "query_encoder"])
def test_example_ids_stay_in_their_config_range(model: str) -> None:
    spec = example_spec(model)
    [ids_input] = [t for t in spec.inputs if t.datatype == "INT64"]
    lo, hi = map(int, spec.parameters[f"input_range.{ids_input.name}"].split(":"))
    shifted = {ids_input.name: (lo + 1, hi)}  # excludes 0: files
    plan = generate_warmup(spec, [], value_ranges=shifted)
    for arrays in probe_inputs(plan, spec):
        values = arrays[ids_input.name]
        assert values.min() >= lo + 1 and values.max() < hi
        assert all(np.all(np.isfinite(a)) for a in arrays.values() if a.dtype.kind == "f")


def test_validate_plan_catches_wrong_sizes_and_dims() -> None:
    spec = ranker({"input_range.ids": "500:1000"})
    plan = generate_warmup(spec, ranker_rows())
    validate_plan(plan, spec)
    short = replace(plan, files={"warmup/s0_ids.bin": b"\0" * 8})
    with pytest.raises(ValueError, match=r"8 bytes, dims \[20\] of INT64 need 160"):
        validate_plan(short, spec)
    sample = plan.samples[0]
    bad = replace(sample, batch_size=17, inputs={
        **sample.inputs, "ctx": replace(sample.inputs["ctx"], dims=(-1,))})
    with pytest.raises(ValueError, match=r"batch_size 17 outside 1\.\.16.*ctx: dims \[-1\]"):
        validate_plan(replace(plan, samples=(bad,)), spec)
    extra = replace(plan, files={**plan.files, "warmup/unused.bin": b""})
    with pytest.raises(ValueError, match="files no sample reads"):
        validate_plan(extra, spec)


def test_probe_inputs_without_batch_dim() -> None:
    spec = make_spec([("x", "INT32", [-1, 2])], max_batch_size=0, dynamic_batching=False,
                     parameters={"input_range.x": "3:4"})
    plan = generate_warmup(spec, [row(4, ("x", "INT32", (5, 2)))])
    [arrays] = probe_inputs(plan, spec)
    assert arrays["x"].shape == (5, 2) and arrays["x"].dtype == np.int32
    assert np.all(arrays["x"] == 3)


def test_unsafe_input_names_get_safe_file_names() -> None:
    spec = make_spec([("in/put:0", "INT64", [2]), ("in_put_0", "INT64", [2])],
                     parameters={"input_range.in/put:0": "1:5", "input_range.in_put_0": "1:5"})
    plan = generate_warmup(spec, [row(3, ("in/put:0", "INT64", (1, 2)),
                                      ("in_put_0", "INT64", (1, 2)))])
    assert sorted(plan.files) == ["warmup/s0_in_put_0.bin", "warmup/s0_input0_in_put_0.bin"]
