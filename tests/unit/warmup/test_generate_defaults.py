"""Plans before any traffic, the config JSON Triton gets, and the signature format."""

from __future__ import annotations

import json

import pytest

from controlplane.errors import ConfigError
from controlplane.gateway.wire import InputHeader
from controlplane.traffic.observation import signature_of as traffic_signature
from controlplane.triton.repository import json_to_pbtxt, parse_config
from controlplane.warmup.generate import generate_warmup, signature_of
from controlplane.warmup.types import TensorShape
from tests.support.repository import EXAMPLES
from tests.unit.warmup.helpers import example_spec, make_spec, row

EXAMPLE_MODELS = sorted(p.name for p in EXAMPLES.iterdir() if (p / "config.pbtxt").is_file())


@pytest.mark.parametrize("model", EXAMPLE_MODELS)
def test_default_plan_from_the_config_alone(model: str) -> None:
    spec = example_spec(model)
    plan = generate_warmup(spec, [])
    assert plan.default and plan.coverage == 0.0 and plan.covered == frozenset()
    assert [s.batch_size for s in plan.samples] == [1, spec.max_batch_size]
    for sample in plan.samples:
        assert set(sample.inputs) == {t.name for t in spec.inputs}
        for data in sample.inputs.values():
            assert -1 not in data.dims and data.source == "zero"
    assert plan.files == {}
    # what Triton's strict parser gets: a valid ModelConfig with the warm-up
    config = parse_config(json_to_pbtxt({**spec.config, "model_warmup": plan.model_warmup()}))
    assert len(config.model_warmup) == 2


def test_default_variable_length_and_default_dims_parameter() -> None:
    plain = make_spec([("tokens", "INT64", [-1])])
    plan = generate_warmup(plain, [])
    assert {s.inputs["tokens"].dims for s in plan.samples} == {(16,)}
    configured = make_spec([("tokens", "INT64", [-1]), ("img", "FP32", [3, -1, -1])],
                           parameters={"default_dims.tokens": "64", "default_dims.img": "8x9"})
    plan = generate_warmup(configured, [])
    assert plan.samples[0].inputs["tokens"].dims == (64,)
    assert plan.samples[0].inputs["img"].dims == (3, 8, 9)


@pytest.mark.parametrize("value", ["sixty", "4x4", "0"])
def test_malformed_default_dims_are_config_errors(value: str) -> None:
    spec = make_spec([("tokens", "INT64", [-1])], parameters={"default_dims.tokens": value})
    with pytest.raises(ConfigError, match=r"default_dims\.tokens"):
        generate_warmup(spec, [])


def test_default_batch_sizes_follow_the_batcher() -> None:
    preferred = make_spec([("x", "FP32", [4])], max_batch_size=8, preferred=[2, 4])
    assert [s.batch_size for s in generate_warmup(preferred, []).samples] == [1, 4]
    unbatched = make_spec([("x", "FP32", [4])], max_batch_size=8, dynamic_batching=False)
    assert [s.batch_size for s in generate_warmup(unbatched, []).samples] == [1]


def test_traffic_that_fits_nothing_falls_back_to_the_default() -> None:
    spec = make_spec([("x", "FP32", [4])])
    plan = generate_warmup(spec, [row(10, ("x", "FP32", (1, 5)))])
    assert plan.default and plan.coverage == 0.0 and plan.samples
    assert any("do not fit the config" in n for n in plan.notes)


def test_model_warmup_json() -> None:
    spec = make_spec([("ids", "INT64", [-1]), ("text", "BYTES", [1])],
                     parameters={"input_range.ids": "1:10", "example.text": '["hi"]'})
    plan = generate_warmup(spec, [row(5, ("ids", "INT64", (2, 3)), ("text", "BYTES", (2, 1)))])
    assert plan.model_warmup() == [{
        "name": "s0_b2",
        "batch_size": 2,
        "inputs": {
            "ids": {"data_type": "TYPE_INT64", "dims": ["3"],
                    "input_data_file": "s0_ids.bin"},
            "text": {"data_type": "TYPE_STRING", "dims": ["1"],
                     "input_data_file": "s0_text.bin"},
        },
        "count": 3,
    }]
    assert sorted(plan.files) == ["warmup/s0_ids.bin", "warmup/s0_text.bin"]
    json.dumps(plan.model_warmup())
    parse_config(json_to_pbtxt({**spec.config, "model_warmup": plan.model_warmup()}))


def test_zero_data_json() -> None:
    plan = generate_warmup(make_spec([("x", "FP32", [2])]), [row(1, ("x", "FP32", (1, 2)))])
    assert plan.model_warmup()[0]["inputs"] == {
        "x": {"data_type": "TYPE_FP32", "dims": ["2"], "zero_data": True}}


@pytest.mark.parametrize("inputs", [
    [("b", "FP32", (4, 32)), ("a", "INT64", (4, 20))],
    [("tokens", "INT64", (1, 7))],
    [("scalar", "FP32", ()), ("name", "BYTES", (2, 1))],
])
def test_signature_matches_the_traffic_module(
        inputs: list[tuple[str, str, tuple[int, ...]]]) -> None:
    ours = signature_of([TensorShape(*i) for i in inputs])
    theirs = traffic_signature(tuple(InputHeader(*i) for i in inputs)).text
    assert ours == theirs
