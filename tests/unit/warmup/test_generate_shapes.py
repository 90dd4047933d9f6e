"""Which shapes and batch sizes a plan warms, and what it counts as covered."""

from __future__ import annotations

import pytest

from controlplane.triton.repository import parse_config, spec_from_config
from controlplane.warmup.generate import (
    default_probe,
    generate_warmup,
    signature_of,
    uncovered_share,
)
from controlplane.warmup.types import ShapeCount, WarmupPlan, WarmupSettings
from tests.unit.warmup.helpers import make_spec, row

# integer inputs need a known valid range (zeros only where it holds 0)
RANKER = make_spec([("ids", "INT64", [20]), ("ctx", "FP32", [32])], max_batch_size=64,
                   parameters={"input_range.ids": "0:1000"})
ENCODER = make_spec([("tokens", "INT64", [-1])], max_batch_size=8,
                    parameters={"input_range.tokens": "0:30000"})


def ranker_row(count: int, batch: int) -> ShapeCount:
    return row(count, ("ids", "INT64", (batch, 20)), ("ctx", "FP32", (batch, 32)))


def tokens_row(count: int, length: int, batch: int = 1) -> ShapeCount:
    return row(count, ("tokens", "INT64", (batch, length)))


def shapes_of(plan: WarmupPlan) -> list[tuple[int, dict[str, tuple[int, ...]]]]:
    return [(s.batch_size, {n: d.dims for n, d in s.inputs.items()}) for s in plan.samples]


def test_fixed_dims_one_shape_batch_sizes_from_clients() -> None:
    shapes = [ranker_row(60, 1), ranker_row(30, 4), ranker_row(8, 16), ranker_row(2, 64)]
    plan = generate_warmup(RANKER, shapes)
    dims = {"ids": (20,), "ctx": (32,)}
    # 1, 4 and 16 carry 98% of requests: 64 is not needed for the 95% batch target
    assert shapes_of(plan) == [(1, dims), (4, dims), (16, dims)]
    assert [s.name for s in plan.samples] == ["s0_b1", "s1_b4", "s2_b16"]
    assert [s.share for s in plan.samples] == [0.6, 0.3, 0.08]
    assert all(s.count == 3 for s in plan.samples)
    # coverage is about shapes: every recorded request has the warmed shape
    assert plan.coverage == 1.0 and not plan.default
    assert plan.covered == {signature_of(r.inputs) for r in shapes}


def test_exact_variable_values_when_few_cover_the_target() -> None:
    shapes = [tokens_row(50, 8), tokens_row(30, 12), tokens_row(15, 16), tokens_row(4, 40),
              tokens_row(1, 64)]
    plan = generate_warmup(ENCODER, shapes)
    assert shapes_of(plan) == [(1, {"tokens": (8,)}), (1, {"tokens": (12,)}),
                               (1, {"tokens": (16,)})]
    assert plan.coverage == pytest.approx(0.95)
    assert plan.covered == {"tokens:INT64:1x8", "tokens:INT64:1x12", "tokens:INT64:1x16"}
    assert any("2 rarer shapes (5.0% of requests) left out" in n for n in plan.notes)


def test_bucketing_by_traffic_quantiles_warms_upper_edges() -> None:
    # lengths 1..20, 5 requests each: 19 values needed for 95%, more than 4 buckets allow
    shapes = [tokens_row(5, length) for length in range(1, 21)]
    plan = generate_warmup(ENCODER, shapes)
    assert shapes_of(plan) == [(1, {"tokens": (n,)}) for n in (5, 10, 15, 19)]
    assert plan.coverage == pytest.approx(0.95)
    assert plan.covered == {f"tokens:INT64:1x{n}" for n in range(1, 20)}
    assert any("upper edges 5, 10, 15, 19" in n and "values above 19 (5.0%" in n
               for n in plan.notes)


def test_bucketing_a_long_tail_stays_bounded_and_counts_right() -> None:
    counts = {length: max(1, 2000 // length) for length in range(1, 513)}
    shapes = [tokens_row(c, length) for length, c in counts.items()]
    settings = WarmupSettings(max_buckets_per_dim=3)
    plan = generate_warmup(ENCODER, shapes, settings=settings)
    warmed = sorted({s.inputs["tokens"].dims[0] for s in plan.samples})
    assert len(warmed) <= 3
    total = sum(counts.values())
    expected = sum(c for length, c in counts.items() if length <= warmed[-1]) / total
    assert plan.coverage == pytest.approx(expected)
    assert plan.coverage >= 0.95
    assert plan.covered == {f"tokens:INT64:1x{n}" for n in counts if n <= warmed[-1]}
    assert uncovered_share(plan.covered, shapes) == pytest.approx(1 - expected)


def test_two_variable_dims_share_the_tail_allowance() -> None:
    spec = make_spec([("a", "INT64", [-1]), ("b", "FP32", [-1])],
                     parameters={"input_range.a": "0:10"})
    shapes = [row(5, ("a", "INT64", (1, x)), ("b", "FP32", (1, y)))
              for x in range(1, 11) for y in range(1, 11)]
    plan = generate_warmup(spec, shapes, settings=WarmupSettings(max_samples=20))
    # each dim may drop at most 2.5%, so together they drop at most 5%
    assert plan.coverage >= 0.95
    for name in ("a", "b"):
        assert len({s.inputs[name].dims for s in plan.samples}) <= 4


def test_a_dropped_bucket_is_not_covered() -> None:
    shapes = [tokens_row(5, length) for length in range(1, 21)]
    plan = generate_warmup(ENCODER, shapes, settings=WarmupSettings(max_samples=3))
    assert shapes_of(plan) == [(1, {"tokens": (n,)}) for n in (5, 10, 15)]
    assert plan.coverage == pytest.approx(0.75)
    assert any("dropped 1 samples, max_samples 3 reached" in n for n in plan.notes)


def test_batch_sizes_from_batch_stats_override_client_sizes() -> None:
    shapes = [ranker_row(60, 1), ranker_row(30, 4), ranker_row(8, 16), ranker_row(2, 64)]
    plan = generate_warmup(RANKER, shapes, batch_stats={1: 10, 8: 70, 16: 20, 128: 5, 32: 0})
    assert [s.batch_size for s in plan.samples] == [8, 16, 1]
    assert [s.share for s in plan.samples] == [0.7, 0.2, 0.1]
    assert any("[128] ignored: outside 1..64" in n for n in plan.notes)
    assert any("[8, 16, 1] from Triton batch_stats" in n for n in plan.notes)


def test_empty_batch_stats_fall_back_to_client_sizes() -> None:
    plan = generate_warmup(RANKER, [ranker_row(10, 2)], batch_stats={4: 0})
    assert [s.batch_size for s in plan.samples] == [2]


def test_each_shape_gets_a_sample_before_any_second_batch_size() -> None:
    shapes = [tokens_row(40, 8, batch=1), tokens_row(40, 8, batch=4), tokens_row(20, 16, 1)]
    plan = generate_warmup(ENCODER, shapes, settings=WarmupSettings(max_samples=2))
    assert shapes_of(plan) == [(1, {"tokens": (8,)}), (1, {"tokens": (16,)})]
    assert plan.coverage == 1.0


def test_requests_over_max_batch_size_do_not_fit() -> None:
    shapes = [tokens_row(90, 8, batch=8), tokens_row(10, 8, batch=16)]
    plan = generate_warmup(ENCODER, shapes, batch_stats={8: 5, 16: 5})
    assert [s.batch_size for s in plan.samples] == [8]
    assert plan.coverage == pytest.approx(0.9)
    assert "tokens:INT64:16x8" not in plan.covered
    assert any("do not fit the config" in n and "batch size 16 outside 1..8" in n
               for n in plan.notes)


def test_rows_that_do_not_fit_the_config_are_uncovered() -> None:
    shapes = [ranker_row(80, 1), row(10, ("ids", "INT64", (1, 21)), ("ctx", "FP32", (1, 32))),
              row(5, ("ids", "INT32", (1, 20)), ("ctx", "FP32", (1, 32))),
              row(5, ("ids", "INT64", (1, 20)))]
    plan = generate_warmup(RANKER, shapes)
    assert len(plan.samples) == 1
    assert plan.coverage == pytest.approx(0.8)
    assert any(n.startswith("3 recorded shapes (20.0% of requests) do not fit")
               for n in plan.notes)


def test_max_batch_size_zero_has_no_batch_dim() -> None:
    spec = make_spec([("x", "FP32", [-1, 3])], max_batch_size=0, dynamic_batching=False)
    shapes = [row(10, ("x", "FP32", (7, 3))), row(5, ("x", "FP32", (9, 3)))]
    plan = generate_warmup(spec, shapes, batch_stats={4: 100})
    assert shapes_of(plan) == [(1, {"x": (7, 3)}), (1, {"x": (9, 3)})]
    assert plan.covered == {"x:FP32:7x3", "x:FP32:9x3"}
    probe = default_probe(spec)
    assert not isinstance(probe, str) and shapes_of(probe) == [(1, {"x": (16, 3)})]


def test_max_total_elements_drops_the_expensive_sample() -> None:
    shapes = [ranker_row(60, 1), ranker_row(30, 4), ranker_row(8, 16)]
    # 52 elements per row x count 3: batch 1 -> 156, batch 4 -> 624, batch 16 -> 2496
    plan = generate_warmup(RANKER, shapes, settings=WarmupSettings(max_total_elements=1000))
    assert [s.batch_size for s in plan.samples] == [1, 4]
    assert any("dropped 1 samples, over max_total_elements 1,000: batch 16" in n
               for n in plan.notes)


def test_count_comes_from_settings() -> None:
    plan = generate_warmup(RANKER, [ranker_row(1, 1)], settings=WarmupSettings(count=7))
    assert [s.count for s in plan.samples] == [7]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        generate_warmup(RANKER, [], settings=WarmupSettings(coverage=0.0))


def test_plans_are_deterministic() -> None:
    shapes = [tokens_row(7 + n % 5, n, batch=1 + n % 3) for n in range(1, 60)]
    spec = make_spec([("tokens", "INT64", [-1])], parameters={"input_range.tokens": "3:50"})
    first = generate_warmup(spec, shapes, batch_stats={1: 5, 2: 3})
    again = generate_warmup(spec, list(shapes), batch_stats={2: 3, 1: 5})
    assert first == again
    assert first.files  # ids exclude 0: seeded files, equal byte for byte


def test_uncovered_share() -> None:
    shapes = [tokens_row(6, 8), tokens_row(3, 12), tokens_row(1, 16)]
    assert uncovered_share(frozenset({"tokens:INT64:1x8"}), shapes) == pytest.approx(0.4)
    assert uncovered_share(frozenset(), shapes) == 1.0
    assert uncovered_share(frozenset({"tokens:INT64:1x8"}), []) == 0.0


def test_optional_inputs_follow_what_requests_sent() -> None:
    spec = spec_from_config("m", parse_config('''
        name: "m" backend: "python" max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] },
                { name: "mask" data_type: TYPE_FP32 dims: [ -1 ] optional: true } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]'''))
    shapes = [row(60, ("x", "FP32", (1, 4))),
              row(40, ("x", "FP32", (1, 4)), ("mask", "FP32", (1, 7))),
              row(5, ("mask", "FP32", (1, 7)))]  # the required input missing: unfit
    plan = generate_warmup(spec, shapes)
    assert [sorted(s.inputs) for s in plan.samples] == [["x"], ["mask", "x"]]
    assert plan.samples[1].inputs["mask"].dims == (7,)
    assert plan.covered == {"x:FP32:1x4", "mask:FP32:1x7,x:FP32:1x4"}
    assert any("1 recorded shapes" in n and "differ from the config" in n for n in plan.notes)
    # before traffic, the probe is the smallest valid request: required inputs only
    probe = default_probe(spec)
    assert not isinstance(probe, str) and sorted(probe.samples[0].inputs) == ["x"]
