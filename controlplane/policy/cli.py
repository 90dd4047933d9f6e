"""``warmctl simulate``: replay a request trace against residency policies.

Wired into ``controlplane.cli`` with ``add_simulate_parser(sub)``; the subcommand is
self-contained (its handler is set as ``func`` and returns an exit code).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane.cli_format import progress
from controlplane.config import AutoscalerSettings, FleetSettings
from controlplane.policy.autoscale_sim import compare_autoscaling, format_table
from controlplane.policy.autoscale_types import AutoscaleOptions
from controlplane.policy.fleet_sim import FleetResult, instance_names, simulate_fleet
from controlplane.policy.fleet_types import write_fleet_events
from controlplane.policy.registry import POLICY_NAMES, POLICY_SPECS, make_policy
from controlplane.policy.replicas import InstanceCapacity, ReplicaOptions
from controlplane.policy.simulator import (
    DEFAULT_EPOCH_OFFSET_S,
    DEFAULT_PLAN_PERIOD_S,
    SimResult,
    simulate,
)
from controlplane.policy.trace_io import (
    TraceFormatError,
    read_models,
    read_trace,
    write_events,
)
from controlplane.policy.types import Metrics, ModelProfile, Policy


class SimulateInputError(ValueError):
    """Bad input files or arguments (exit code 2)."""


def parse_policy_list(text: str) -> list[str]:
    names = list(POLICY_NAMES) if text.strip() == "all" else [
        n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        raise SimulateInputError(f"unknown policy {', '.join(unknown) or text!r}; known: "
                                 f"{', '.join(POLICY_NAMES)}, or 'all'")
    return names


def events_path_for(base: Path, policy: str, several: bool) -> Path:
    """One events file per policy when several run: EVENTS.csv -> EVENTS.<policy>.csv."""
    return base.with_name(f"{base.stem}.{policy}{base.suffix}") if several else base


def run_simulation(trace_path: Path | str, models_path: Path | str, budget_mb: float,
                   policies: Sequence[str], param: float | None = None, *,
                   events_out: Path | str | None = None,
                   plan_period_s: float = DEFAULT_PLAN_PERIOD_S,
                   epoch_offset_s: float = DEFAULT_EPOCH_OFFSET_S) -> list[SimResult]:
    """Read the files, run each policy, write events if asked; bad input raises
    :class:`SimulateInputError` or :class:`TraceFormatError`."""
    _check(budget_mb, plan_period_s, param, policies)
    models = read_models(models_path)
    trace = read_trace(trace_path, known_models=models)
    results = []
    for number, name in enumerate(policies, 1):
        policy = _policy(name, models, param, epoch_offset_s, trace)
        with progress(f"simulating {name} ({number}/{len(policies)})"):  # on a terminal
            result = simulate(trace, models, budget_mb, policy, plan_period_s=plan_period_s,
                              param=param if param is not None else _default_param(name))
        results.append(result)
        if events_out is not None:
            write_events(events_path_for(Path(events_out), name, len(policies) > 1),
                         result.events)
    return results


def run_fleet_simulation(trace_path: Path | str, models_path: Path | str, budget_mb: float,
                         instances: int, policies: Sequence[str], param: float | None = None,
                         *, options: ReplicaOptions | None = None,
                         events_out: Path | str | None = None,
                         plan_period_s: float = DEFAULT_PLAN_PERIOD_S,
                         epoch_offset_s: float = DEFAULT_EPOCH_OFFSET_S) -> list[FleetResult]:
    """As :func:`run_simulation` over ``instances`` instances of ``budget_mb`` each (named
    i1 .. iN); events carry the instance."""
    _check(budget_mb, plan_period_s, param, policies)
    if instances < 1:
        raise SimulateInputError(f"--instances must be at least 1, got {instances}")
    options = options or ReplicaOptions()
    _check_options(options)
    caps = [InstanceCapacity(name, budget_mb) for name in instance_names(instances)]
    models = read_models(models_path)
    trace = read_trace(trace_path, known_models=models)
    results = []
    for number, name in enumerate(policies, 1):
        policy = _policy(name, models, param, epoch_offset_s, trace)
        with progress(f"simulating {name} on {instances} instances "
                      f"({number}/{len(policies)})"):
            result = simulate_fleet(trace, models, caps, policy, options=options,
                                    plan_period_s=plan_period_s,
                                    param=param if param is not None else _default_param(name))
        results.append(result)
        if events_out is not None:
            write_fleet_events(events_path_for(Path(events_out), name, len(policies) > 1),
                               result.events)
    return results


def _check_options(options: ReplicaOptions) -> None:
    if not options.rate_per_replica > 0:
        raise SimulateInputError(f"--replica-rate must be positive, got "
                                 f"{options.rate_per_replica}")
    if options.pinned_replicas < 1:
        raise SimulateInputError(f"--pinned-replicas must be at least 1, got "
                                 f"{options.pinned_replicas}")
    if options.max_replicas < 0:
        raise SimulateInputError(f"--max-replicas must be 0 (one per instance) or more, got "
                                 f"{options.max_replicas}")


def _check(budget_mb: float, plan_period_s: float, param: float | None,
           policies: Sequence[str]) -> None:
    if budget_mb <= 0:
        raise SimulateInputError(f"--budget-mb must be positive, got {budget_mb}")
    if plan_period_s <= 0:
        raise SimulateInputError(f"--plan-period must be positive, got {plan_period_s}")
    if param is not None and len(policies) > 1:
        raise SimulateInputError("--param needs a single --policy (its meaning differs)")


def _policy(name: str, models: Mapping[str, ModelProfile], param: float | None,
            epoch_offset_s: float, trace: Sequence[tuple[float, str]]) -> Policy:
    try:
        return make_policy(name, models, param, epoch_offset_s=epoch_offset_s,
                           trace=trace if name == "oracle" else None)
    except ValueError as exc:
        raise SimulateInputError(f"{name}: {exc}") from None


def _default_param(name: str) -> float | None:
    return next(spec.default_param for spec in POLICY_SPECS if spec.name == name)


def _table(results: Sequence[tuple[str, float | None, Metrics]]) -> str:
    """(policy, param, figures) rows as a text table."""
    header = (f"{'POLICY':<17} {'PARAM':>9} {'REQUESTS':>9} {'COLD':>7} {'RATE':>8} "
              f"{'P99 WAIT':>9} {'MEAN WAIT':>10} {'MEMORY GB*s':>12} {'OVER':>5}")
    lines = [header]
    for policy, param_value, m in results:
        param = "-" if param_value is None else f"{param_value:g}"
        lines.append(f"{policy:<17} {param:>9} {m.requests:>9} {m.cold_starts:>7} "
                     f"{m.cold_start_rate:>8.4f} {m.p99_wait_s:>8.2f}s {m.mean_wait_s:>9.3f}s "
                     f"{m.memory_gb_s:>12.0f} {m.budget_violations:>5}")
    return "\n".join(lines)


def _fleet_table(results: Sequence[FleetResult]) -> str:
    """The single-instance table, then per policy each instance's memory and violations and
    the models that had more than one replica."""
    lines = [_table([(r.policy, r.param, r.metrics.total) for r in results])]
    for r in results:
        per = ", ".join(f"{name} {gb_s:.0f} GB*s / {r.metrics.budget_violations[name]} over"
                        for name, gb_s in r.metrics.memory_gb_s.items())
        lines.append(f"{r.policy}: {per}")
        several = [f"{m} (max {k}, mean {r.metrics.mean_replicas[m]:.2f})"
                   for m, k in sorted(r.metrics.max_replicas.items()) if k > 1]
        lines.append(f"  replicas > 1: {', '.join(several) or 'none'}")
    return "\n".join(lines)


def _fleet(args: argparse.Namespace, policies: Sequence[str]) -> int:
    options = ReplicaOptions(rate_per_replica=args.replica_rate,
                             pinned_replicas=args.pinned_replicas,
                             max_replicas=args.max_replicas)
    results = run_fleet_simulation(
        args.trace, args.models, args.budget_mb, args.instances, policies, args.param,
        options=options, events_out=args.events_out, plan_period_s=args.plan_period,
        epoch_offset_s=args.epoch_offset)
    if args.json:
        print(json.dumps({"instances": args.instances, "budget_mb_per_instance": args.budget_mb,
                          "replica_rate_per_s": options.rate_per_replica,
                          "pinned_replicas": options.pinned_replicas,
                          "max_replicas": options.max_replicas,
                          "results": [r.summary() for r in results]}, indent=2))
    else:
        print(_fleet_table(results))
    return 0


def _autoscale(args: argparse.Namespace) -> int:
    """``--autoscale``: compare pre-warmed, reactive and model-unaware scale-out from
    ``--instances`` (the forecast: seasonal with ``--cycle``, else the ``ours`` planner's)."""
    if args.instances is None:
        raise SimulateInputError("--autoscale needs --instances (the starting count)")
    try:
        options = AutoscaleOptions.of(AutoscalerSettings(
            min_instances=min(args.instances, args.max_instances),
            max_instances=args.max_instances), FleetSettings(
            replica_rate_per_s=args.replica_rate, max_replicas=args.max_replicas), args.budget_mb)
        models = read_models(args.models)
        trace = read_trace(args.trace, known_models=models)
        ours = None if args.cycle else (lambda: make_policy(
            "ours", models, None, epoch_offset_s=args.epoch_offset))
        out = compare_autoscaling(trace, models, args.budget_mb, options, args.instances,
                                  cycle_s=args.cycle, forecaster=ours,
                                  spikes=[_window(w) for w in args.spike])
    except ValueError as exc:  # pydantic's ValidationError is one too
        raise SimulateInputError(str(exc).replace("\n", "; ")) from None
    print(json.dumps(out, indent=2) if args.json else format_table(out))
    return 0


def _window(text: str) -> tuple[float, float]:
    start, _, end = text.partition(":")
    return float(start), float(end)  # a ValueError names the bad number


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        policies = parse_policy_list(args.policy)
        if args.autoscale:
            return _autoscale(args)
        if args.instances is not None:
            return _fleet(args, policies)
        results = run_simulation(args.trace, args.models, args.budget_mb, policies, args.param,
                                 events_out=args.events_out, plan_period_s=args.plan_period,
                                 epoch_offset_s=args.epoch_offset)
    except (SimulateInputError, TraceFormatError) as exc:
        print(f"warmctl simulate: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"warmctl simulate: cannot read or write {exc.filename}: {exc.strerror}",
              file=sys.stderr)
        return 2
    if args.json:
        out: dict[str, Any] = {"budget_mb": args.budget_mb,
                               "results": [r.summary() for r in results]}
        print(json.dumps(out, indent=2))
    else:
        print(_table([(r.policy, r.param, r.metrics) for r in results]))
    return 0


def add_simulate_parser(subparsers: Any) -> None:
    """Register ``simulate`` on an ``argparse`` sub-parser collection."""
    names = ", ".join(f"{s.name} ({s.param_meaning}; default {s.default_param})"
                      for s in POLICY_SPECS)
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate", help="replay a request trace against residency policies",
        description="Replay TRACE.csv (timestamp,model) with the models of MODELS.csv "
                    "(model,memory_mb,load_s[,pinned]) under a memory budget and report cold "
                    f"starts, waits and memory. Policies: {names}.")
    p.add_argument("--trace", type=Path, required=True, help="TRACE.csv")
    p.add_argument("--models", type=Path, required=True, help="MODELS.csv")
    p.add_argument("--budget-mb", type=float, required=True,
                   help="memory budget in MB (per instance with --instances)")
    p.add_argument("--policy", default="ours", help="a policy name, a comma list, or 'all'")
    p.add_argument("--param", type=float, help="the policy's parameter (single policy only)")
    p.add_argument("--events-out", type=Path,
                   help="write EVENTS.csv (time,model,event[,instance]); with several "
                        "policies one file each, named EVENTS.<policy>.csv")
    p.add_argument("--plan-period", type=float, default=DEFAULT_PLAN_PERIOD_S,
                   help="seconds between periodic plan() calls (default %(default)s)")
    p.add_argument("--epoch-offset", type=float, default=DEFAULT_EPOCH_OFFSET_S,
                   help="Unix time of trace second 0, for time-of-day features "
                        "(default: a Monday midnight UTC)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fleet = p.add_argument_group(
        "fleet", "with --instances N: the policy runs fleet-wide (budget: the sum), replicas "
                 "are placed per instance (i1 .. iN) as the live fleet places them")
    fleet.add_argument("--instances", type=int, help="number of instances")
    fleet.add_argument("--replica-rate", type=float, default=ReplicaOptions.rate_per_replica,
                       help="requests/s one replica carries (default %(default)s)")
    fleet.add_argument("--pinned-replicas", type=int, default=ReplicaOptions.pinned_replicas,
                       help="replicas of a pinned model (default %(default)s)")
    fleet.add_argument("--max-replicas", type=int, default=ReplicaOptions.max_replicas,
                       help="most replicas of a model, 0: one per instance (default "
                            "%(default)s)")
    scale = p.add_argument_group(
        "autoscale", "with --autoscale: instances join and leave as the autoscaler decides, "
                     "from --instances; pre-warmed, reactive and model-unaware joins compared")
    scale.add_argument("--autoscale", action="store_true", help="compare scale-out strategies")
    scale.add_argument("--max-instances", type=int, default=4, help="(default %(default)s)")
    scale.add_argument("--cycle", type=float, help="the trace's period in s (a compressed day): "
                       "forecast from the cycle before (default: the ours planner's forecast)")
    scale.add_argument("--spike", action="append", default=[], metavar="START:END",
                       help="seconds whose waits are reported apart (repeatable)")
    p.set_defaults(func=cmd_simulate)
