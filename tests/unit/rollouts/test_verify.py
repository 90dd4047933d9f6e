"""The verification's pure checks, and where its samples come from (no Triton)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from controlplane.rollouts.verify import VerifyOptions, samples_for, verify_version
from controlplane.rollouts.verify_checks import (
    Output,
    converged_p50,
    declared_problems,
    disagreement,
    latency_problem,
    nonfinite_problems,
)
from controlplane.rollouts.verify_samples import GENERATED, PROVEN_PROBE, RECORDED
from controlplane.store.database import Database
from controlplane.tensors import TensorShape
from controlplane.traffic.observation import OK, Observation
from controlplane.traffic.store import TrafficStore
from controlplane.triton.client import TritonClient
from controlplane.triton.repository import ModelSpec, parse_config, spec_from_config
from controlplane.warmup.configs import PROVEN, WarmupStore
from controlplane.warmup.generate import default_probe
from controlplane.warmup.types import WarmupPlan


def _spec(input_type: str = "TYPE_FP32", max_batch_size: int = 8) -> ModelSpec:
    return spec_from_config("m", parse_config(f'''
        name: "m" backend: "python" max_batch_size: {max_batch_size}
        input [ {{ name: "x" data_type: {input_type} dims: [ -1 ] }} ]
        output [ {{ name: "scores" data_type: TYPE_FP32 dims: [ 5 ] }},
                 {{ name: "label" data_type: TYPE_STRING dims: [ 1 ] }} ]
    '''))


def _fp32(values: object) -> Output:
    return Output("FP32", np.asarray(values, dtype=np.float32))


# -- declared shapes and types -----------------------------------------------------------------
def test_declared_outputs_pass() -> None:
    outputs = {"scores": _fp32(np.zeros((2, 5))),
               "label": Output("BYTES", np.array([[b"a"], [b"b"]], dtype=object))}
    assert declared_problems(_spec(), outputs, batch=2) == []


def test_wrong_batch_dim_type_and_missing_output_are_named() -> None:
    problems = declared_problems(_spec(), {"scores": Output("FP64", np.zeros((3, 4)))}, batch=2)
    assert problems == [
        "output 'scores' is FP64, declared FP32",
        "output 'scores' has shape [3, 4], declared [2, 5]",
        "output 'label' missing",
    ]


def test_no_batch_dim_when_the_model_does_not_batch() -> None:
    spec = _spec(max_batch_size=0)
    assert declared_problems(spec, {"scores": _fp32(np.zeros(5)),
                                    "label": Output("BYTES", np.array([b"a"], dtype=object))},
                             batch=None) == []
    assert "declared [5]" in declared_problems(spec, {"scores": _fp32(np.zeros((1, 5)))},
                                               batch=None)[0]


# -- finite -----------------------------------------------------------------------------------
def test_nan_and_inf_are_counted_in_float_outputs_only() -> None:
    outputs = {"scores": _fp32([[1.0, np.nan, np.inf, -np.inf, 0.0]]),
               "ids": Output("INT64", np.array([[1, 2]])),
               "label": Output("BYTES", np.array([[b"nan"]], dtype=object))}
    assert nonfinite_problems(outputs) == [
        "output 'scores' has 1 NaN and 2 infinite of 5 values"]
    assert nonfinite_problems({"scores": _fp32([[1.0, 2.0]])}) == []


def test_half_precision_infinities_are_counted() -> None:
    half = Output("FP16", np.array([np.inf, 1.0], dtype=np.float16))
    assert nonfinite_problems({"h": half}) == ["output 'h' has 0 NaN and 1 infinite of 2 values"]


# -- agreement --------------------------------------------------------------------------------
def test_values_within_atol_and_rtol_agree() -> None:
    active = _fp32([[1.0, 100.0]])
    assert disagreement("y", _fp32([[1.005, 100.0]]), active, atol=0.01, rtol=None,
                        top_k=None) is None
    assert disagreement("y", _fp32([[1.0, 100.5]]), active, atol=None, rtol=0.01,
                        top_k=None) is None


def test_a_disagreement_quotes_the_largest_difference_and_where() -> None:
    problem = disagreement("y", _fp32([[1.5, 2.0, 3.2]]), _fp32([[1.0, 2.0, 3.0]]),
                           atol=0.01, rtol=None, top_k=None)
    assert problem is not None
    assert "in 2 of 3 values" in problem and "max |diff| 0.5 " in problem
    assert "(0, 0): 1.5 vs 1" in problem


def test_nan_where_the_active_has_nan_is_not_held_against_the_target() -> None:
    assert disagreement("y", _fp32([[0.0, 2.0]]), _fp32([[np.nan, 2.0]]), atol=0.01,
                        rtol=None, top_k=None) is None


def test_shape_and_exact_types_must_match() -> None:
    assert "the active version's FP32[1, 3]" in str(disagreement(
        "y", _fp32([[1.0, 2.0]]), _fp32([[1.0, 2.0, 3.0]]), atol=1.0, rtol=None, top_k=None))
    ints = Output("INT64", np.array([[1, 2, 3]]))
    assert disagreement("i", ints, ints, atol=1.0, rtol=None, top_k=None) is None
    assert "in 1 values" in str(disagreement("i", Output("INT64", np.array([[1, 2, 4]])), ints,
                                             atol=1.0, rtol=None, top_k=None))
    words = Output("BYTES", np.array([b"a", b"b"], dtype=object))
    assert disagreement("w", words, words, atol=None, rtol=None, top_k=1) is None


def test_top_k_compares_the_chosen_indices_not_their_values() -> None:
    active = _fp32([[0.9, 0.1, 0.8, 0.2, 0.0], [0.0, 0.1, 0.2, 0.3, 0.4]])
    rescaled = _fp32([[9.0, 1.0, 8.5, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    assert disagreement("s", rescaled, active, atol=None, rtol=None, top_k=2) is None
    # order within the top 2 swapped: still the same two items
    swapped = _fp32([[0.8, 0.1, 0.9, 0.2, 0.0], [0.0, 0.1, 0.2, 0.4, 0.3]])
    assert disagreement("s", swapped, active, atol=None, rtol=None, top_k=2) is None
    changed = _fp32([[0.9, 0.95, 0.8, 0.2, 0.0], [0.0, 0.1, 0.2, 0.3, 0.4]])
    problem = disagreement("s", changed, active, atol=None, rtol=None, top_k=2)
    assert problem == ("output 's' top-2 indices differ from the active version's in 1 of 2 "
                       "rows (row 0: [0, 1] vs [0, 2])")


# -- latency ----------------------------------------------------------------------------------
def test_converged_p50_leaves_the_first_round_out() -> None:
    assert converged_p50([[1.0, 1.0], [0.01, 0.03], [0.02]]) == pytest.approx(0.02)
    assert converged_p50([[0.5, 0.7]]) == pytest.approx(0.6)
    assert converged_p50([]) is None


def test_latency_bound_is_factor_times_active_plus_floor() -> None:
    assert latency_problem(0.010, 0.020, 2.0, 0.002) is None
    assert latency_problem(0.0003, 0.0021, 2.0, 0.002) is None  # tiny models: the floor
    problem = latency_problem(0.010, 0.030, 2.0, 0.002)
    assert problem == ("latency: p50 30.00 ms vs 10.00 ms active, above the limit of "
                       "22.00 ms (2 x active + 2 ms)")


async def test_no_samples_is_a_failed_verdict_without_any_request() -> None:
    client = TritonClient("127.0.0.1:1")  # nothing listens: a request would fail differently
    verdict = await verify_version(client, "m", "1", "2", [], _spec(), VerifyOptions())
    assert not verdict.passed and verdict.samples == 0
    assert verdict.reason.startswith("no samples to verify on")


# -- where samples come from ------------------------------------------------------------------
def _record(traffic: TrafficStore, rows: list[tuple[int, float]]) -> None:
    observations = []
    for n, (length, value) in enumerate(rows):
        raw = np.full((1, length), value, np.float32).tobytes()
        observations.append(Observation(
            "m", "", (TensorShape("x", "FP32", (1, length)),), time.time() + n, 0.001, OK,
            False, None, payload=(raw, ((0, len(raw)),))))
    traffic.write(observations)


async def test_recorded_samples_come_first_newest_first_across_shapes(
        database: Database) -> None:
    traffic = TrafficStore(database, "default")
    _record(traffic, [(4, 1.0), (4, 2.0), (8, 3.0), (4, 2.0)])
    samples = await samples_for("m", _spec(), traffic, WarmupStore(database), limit=10)
    assert all(s.source == RECORDED for s in samples)
    # newest per shape, then the next of each; the repeated payload once
    firsts = [(s.inputs[0].array.shape, float(s.inputs[0].array.flat[0])) for s in samples]
    assert firsts == [((1, 4), 2.0), ((1, 8), 3.0), ((1, 4), 1.0)]
    assert samples[0].batch(_spec()) == 1
    limited = await samples_for("m", _spec(), traffic, WarmupStore(database), limit=2)
    assert len(limited) == 2


async def test_proven_probe_samples_when_nothing_is_recorded(database: Database) -> None:
    spec = _spec()
    plan = default_probe(spec)
    assert isinstance(plan, WarmupPlan)
    warmups = WarmupStore(database)
    stored = warmups.save("m", plan, "test")
    traffic = TrafficStore(database, "default")
    # saved but not proven: the generated default probe, not a proven sample
    samples = await samples_for("m", spec, traffic, warmups, limit=10)
    assert [s.source for s in samples] == [GENERATED]
    warmups.set_proofs("m", {stored.sample_key(stored.samples[0]): (PROVEN, None)})
    samples = await samples_for("m", spec, traffic, warmups, limit=10)
    assert [s.source for s in samples] == [PROVEN_PROBE]
    (x,) = samples[0].inputs
    assert (x.name, x.datatype, x.array.shape) == ("x", "FP32", (1, 16))


async def test_zeros_at_the_declared_dims_as_the_last_resort(database: Database) -> None:
    # an integer input of unknown range: no safe data, so zeros, and the label says why
    samples = await samples_for("m", _spec("TYPE_INT64"), TrafficStore(database, "default"),
                                WarmupStore(database), limit=10)
    assert [s.source for s in samples] == [GENERATED]
    assert samples[0].label.startswith("zeros at the config's dims")
    (x,) = samples[0].inputs
    assert x.datatype == "INT64" and x.array.shape == (1, 16) and not x.array.any()
