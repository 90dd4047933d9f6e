"""Traffic-shaped ``model_warmup``: the shapes and batch sizes a model really serves, valid data.

Pure: the shape histogram, Triton's batch_stats and optional payload samples in, a
:class:`WarmupPlan` out; the same inputs always give the same plan.

How a plan is made:

1. Histogram rows that do not fit the config are left out (Triton would reject them too).
2. Variable dims keep their exact values when a few cover the traffic; otherwise the values
   are bucketed by traffic quantiles and each bucket is warmed at its upper edge (see
   :mod:`controlplane.warmup.gen_shapes`). A request counts as covered when its value falls in
   a warmed bucket.
3. The fewest shapes reaching ``settings.coverage`` are chosen, largest first.
4. Batch sizes: those Triton's batcher formed (``batch_stats``) covering ``batch_coverage`` of
   executions, else per shape the sizes clients sent.
5. Samples are ordered so that every chosen shape gets its most used batch size before any
   shape gets a second one (a cold shape costs more than a cold batch size of a warm shape),
   then by share; ``max_samples`` and ``max_total_elements`` cut from the end.

Coverage is about shapes: a recorded request is covered when its non-batch shape is warmed at
some batch size, since the dynamic batcher, not the client, decides the executed batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controlplane.triton.repository import ModelSpec
from controlplane.warmup.data import InputFiller, ShapeFill, validate_plan
from controlplane.warmup.gen_batches import batches_from_stats, default_key
from controlplane.warmup.gen_samples import (
    EXAMPLES_IN_NOTES,
    Candidate,
    apply_caps,
    assemble_samples,
    order_candidates,
)
from controlplane.warmup.gen_shapes import (
    RecordedShape,
    ShapeGroup,
    ShapeKey,
    group_shapes,
    key_text,
    parse_row,
    plan_variable_dims,
    select_groups,
    signature_of,
)
from controlplane.warmup.types import PayloadSampleData, ShapeCount, WarmupPlan, WarmupSettings

__all__ = ["default_probe", "generate_warmup", "signature_of", "uncovered_share"]


def uncovered_share(covered: frozenset[str], shapes: Sequence[ShapeCount]) -> float:
    """Share of the requests in ``shapes`` whose signature is not in ``covered`` (0 if none)."""
    total = sum(row.count for row in shapes)
    if total <= 0:
        return 0.0
    return sum(row.count for row in shapes if signature_of(row.inputs) not in covered) / total


def _check(settings: WarmupSettings) -> None:
    shares = (settings.coverage, settings.batch_coverage)
    if not all(0.0 < s <= 1.0 for s in shares) or min(
            settings.max_samples, settings.max_buckets_per_dim, settings.count,
            settings.max_total_elements, settings.default_variable_length) < 1:
        raise ValueError(f"invalid warm-up settings: {settings}")


def _no_traffic_plan(notes: list[str]) -> WarmupPlan:
    """No recorded request fits: no sample, since a warm-up sample at a shape or batch size
    traffic never sent can fail the load (and crash Triton 2.51) where plain Triton serves.
    The model loads plain and is warmed by probes (:func:`default_probe`)."""
    return WarmupPlan((), {}, 0.0, True, (
        *notes, "no traffic recorded yet: no generated model_warmup (the model loads as "
                "config.pbtxt says and is warmed by probes after the load)"))


def default_probe(
    spec: ModelSpec,
    *,
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    samples: Sequence[PayloadSampleData] = (),
    settings: WarmupSettings = WarmupSettings(),  # noqa: B008 (frozen: safe to share)
) -> WarmupPlan | str:
    """One batch-1 request at the config's default dims, for probing a model that no traffic
    reached yet; or why none is safe (an integer input of unknown range, BYTES without
    examples). Never part of ``model_warmup``: only a probe after the load, whose failure is
    harmless. Raises ConfigError for malformed ``warmctl.*`` parameters."""
    _check(settings)
    if not spec.inputs:
        return "the config names no inputs"
    filler = InputFiller(spec, value_ranges=value_ranges or {}, samples=samples,
                         seed=settings.seed)
    key, notes = default_key(spec, settings.default_variable_length)
    fill = filler.fill(key)
    if isinstance(fill, str):
        return fill
    candidate = Candidate(key, 1, 0.0, None)
    built, files, data_notes = assemble_samples([candidate], {key: fill}, spec, 1)
    plan = WarmupPlan(tuple(built), files, 0.0, True, (*notes, *data_notes))
    validate_plan(plan, spec)
    return plan


def _fit_rows(spec: ModelSpec, shapes: Sequence[ShapeCount],
              total: int) -> tuple[list[RecordedShape], list[str]]:
    """The histogram rows Triton would run, and a note on those it would reject."""
    recorded: list[RecordedShape] = []
    rejected: list[tuple[str, int, str]] = []
    for row in shapes:
        if row.count <= 0:
            continue
        parsed = parse_row(spec, row)
        if isinstance(parsed, str):
            rejected.append((signature_of(row.inputs), row.count, parsed))
        else:
            recorded.append(parsed)
    notes = []
    if rejected:
        examples = "; ".join(f"{sig}: {why}" for sig, _, why in rejected[:EXAMPLES_IN_NOTES])
        share = sum(c for _, c, _ in rejected) / total
        notes.append(f"{len(rejected)} recorded shapes ({share:.1%} of requests) do not fit "
                     f"the config and cannot be warmed, e.g. {examples}")
    return recorded, notes


def _fill_groups(groups: Sequence[ShapeGroup], filler: InputFiller,
                 total: int) -> tuple[dict[ShapeKey, ShapeFill], list[str]]:
    """Data for every shape that can have it; a note on those that cannot (BYTES without
    examples or payloads), which then never count toward coverage."""
    fills: dict[ShapeKey, ShapeFill] = {}
    failed: list[tuple[ShapeGroup, str]] = []
    for group in groups:
        fill = filler.fill(group.key)
        if isinstance(fill, str):
            failed.append((group, fill))
        else:
            fills[group.key] = fill
    notes = []
    if failed:
        share = sum(g.count for g, _ in failed) / total
        examples = "; ".join(f"{key_text(g.key)}: {why}"
                             for g, why in failed[:EXAMPLES_IN_NOTES])
        notes.append(f"{len(failed)} shapes ({share:.1%} of requests) cannot be warmed, "
                     f"e.g. {examples}")
    return fills, notes


def generate_warmup(
    spec: ModelSpec,
    shapes: Sequence[ShapeCount],
    *,
    batch_stats: Mapping[int, int] | None = None,
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    samples: Sequence[PayloadSampleData] = (),
    settings: WarmupSettings = WarmupSettings(),  # noqa: B008 (frozen: safe to share)
) -> WarmupPlan:
    """The warm-up plan for ``spec`` from its recorded traffic (see the module docstring).

    ``batch_stats``: executed batch size -> executions, from Triton's statistics.
    ``value_ranges``: half-open [lo, hi) of valid values per integer input; overrides the
    config's ``warmctl.input_range.<input>``. ``samples``: real requests kept by the gateway.
    Raises ConfigError for malformed ``warmctl.*`` parameters, ValueError for bad settings.
    """
    _check(settings)
    filler = InputFiller(spec, value_ranges=value_ranges or {}, samples=samples,
                         seed=settings.seed)
    total = sum(row.count for row in shapes if row.count > 0)
    recorded, notes = _fit_rows(spec, shapes, total)
    if not recorded:
        return _no_traffic_plan(notes)

    variable, bucket_notes = plan_variable_dims(
        spec, recorded, settings.coverage, settings.max_buckets_per_dim)
    notes.extend(bucket_notes)
    groups, _ = group_shapes(recorded, variable)
    fills, fill_notes = _fill_groups(groups, filler, total)
    notes.extend(fill_notes)
    buildable = [g for g in groups if g.key in fills]
    # The target counts only requests some sample could stand for: those that fit the config
    # and whose data can be built.
    warmable = sum(row.count for row in recorded) - sum(
        g.count for g in groups if g.key not in fills)
    chosen = select_groups(buildable, warmable, settings.coverage)
    chosen_keys = {g.key for g in chosen}
    if left_out := [g for g in buildable if g.key not in chosen_keys]:
        share = sum(g.count for g in left_out) / total
        notes.append(f"{len(left_out)} rarer shapes ({share:.1%} of requests) left out: "
                     f"{len(chosen)} reach the coverage target {settings.coverage:.0%}")

    stats_batches = None
    if spec.max_batch_size > 0 and batch_stats:
        stats_batches, batch_notes = batches_from_stats(spec, batch_stats,
                                                        settings.batch_coverage)
        notes.extend(batch_notes)
    if spec.max_batch_size > 0 and stats_batches is None:
        notes.append(f"batch sizes per shape from client requests, covering "
                     f"{settings.batch_coverage:.0%} of each shape's requests")
    candidates = order_candidates(chosen, total, spec, stats_batches, settings.batch_coverage)
    accepted, cap_notes = apply_caps(candidates, settings, spec)
    warm_samples, files, data_notes = assemble_samples(accepted, fills, spec, settings.count)
    covered = frozenset(sig for c in accepted if c.group is not None
                        for sig in c.group.signatures)
    plan = WarmupPlan(
        samples=tuple(warm_samples),
        files=files,
        coverage=sum(row.count for row in recorded if row.signature in covered) / total,
        default=False,
        notes=(*notes, *cap_notes, *data_notes),
        covered=covered,
    )
    validate_plan(plan, spec)
    return plan
