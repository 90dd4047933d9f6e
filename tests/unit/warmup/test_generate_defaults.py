"""Plans before any traffic, the config JSON Triton gets, and the signature format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from controlplane.errors import ConfigError
from controlplane.gateway.wire import InputHeader
from controlplane.traffic.observation import signature_of as traffic_signature
from controlplane.triton.repository import json_to_pbtxt, parse_config
from controlplane.warmup.generate import default_probe, generate_warmup, signature_of
from controlplane.warmup.types import TensorShape
from tests.support.repository import EXAMPLES
from tests.unit.warmup.helpers import example_spec, make_spec, row

EXAMPLE_MODELS = sorted(p.name for p in EXAMPLES.iterdir() if (p / "config.pbtxt").is_file())


@pytest.mark.parametrize("model", EXAMPLE_MODELS)
def test_no_traffic_no_samples_and_a_batch_one_probe(model: str) -> None:
    spec = example_spec(model)
    plan = generate_warmup(spec, [])
    # a sample at a shape or batch size traffic never sent can fail the load: none at all
    assert plan.default and plan.samples == () and plan.files == {}
    assert plan.coverage == 0.0 and plan.covered == frozenset()
    assert any("no traffic recorded yet" in n for n in plan.notes)
    probe = default_probe(spec)
    assert not isinstance(probe, str)
    assert [s.batch_size for s in probe.samples] == [1]
    [sample] = probe.samples
    assert set(sample.inputs) == {t.name for t in spec.inputs}
    assert all(-1 not in d.dims for d in sample.inputs.values())
    # what Triton's strict parser would get (probes use the same sample form)
    config = parse_config(json_to_pbtxt({**spec.config, "model_warmup": probe.model_warmup()}))
    assert len(config.model_warmup) == 1


def test_default_probe_dims_and_default_dims_parameter() -> None:
    plain = make_spec([("tokens", "INT64", [-1])], parameters={"input_range.tokens": "0:9"})
    probe = default_probe(plain)
    assert not isinstance(probe, str)
    assert probe.samples[0].inputs["tokens"].dims == (16,)
    configured = make_spec([("tokens", "INT64", [-1]), ("img", "FP32", [3, -1, -1])],
                           parameters={"default_dims.tokens": "64", "default_dims.img": "8x9",
                                       "input_range.tokens": "0:9"})
    probe = default_probe(configured)
    assert not isinstance(probe, str)
    assert probe.samples[0].inputs["tokens"].dims == (64,)
    assert probe.samples[0].inputs["img"].dims == (3, 8, 9)


def test_no_probe_when_its_data_is_not_known_to_be_safe() -> None:
    # ids of unknown range: zeros may be invalid (1-based ids), so no probe at all
    ids = make_spec([("category", "INT64", [4])])
    why = default_probe(ids)
    assert isinstance(why, str) and "warmctl.input_range.category" in why
    text = make_spec([("text", "BYTES", [1])])
    why = default_probe(text)
    assert isinstance(why, str) and "warmctl.example.text" in why
    # a range excluding 0 gets ids drawn inside it
    ranged = default_probe(make_spec([("category", "INT64", [4])],
                                     parameters={"input_range.category": "1:51"}))
    assert not isinstance(ranged, str)
    [data] = ranged.files.values()
    assert set(np.frombuffer(data, np.int64)) <= set(range(1, 51))


@pytest.mark.parametrize("value", ["sixty", "4x4", "0"])
def test_malformed_default_dims_are_config_errors(value: str) -> None:
    spec = make_spec([("tokens", "INT64", [-1])], parameters={"default_dims.tokens": value})
    with pytest.raises(ConfigError, match=r"default_dims\.tokens"):
        default_probe(spec)


def test_traffic_that_fits_nothing_gives_no_samples() -> None:
    spec = make_spec([("x", "FP32", [4])])
    plan = generate_warmup(spec, [row(10, ("x", "FP32", (1, 5)))])
    assert plan.default and plan.coverage == 0.0 and not plan.samples
    assert any("do not fit the config" in n for n in plan.notes)


def test_integers_of_unknown_range_are_never_warmed_with_zeros() -> None:
    spec = make_spec([("ids", "INT64", [4]), ("x", "FP32", [2])])
    plan = generate_warmup(spec, [row(10, ("ids", "INT64", (1, 4)), ("x", "FP32", (1, 2)))])
    assert plan.samples == ()
    assert any("no known valid range" in n for n in plan.notes)


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
