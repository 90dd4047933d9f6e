"""``warmctl simulate``: replay a request trace against residency policies.

Wired into ``controlplane.cli`` with ``add_simulate_parser(sub)``; the subcommand is
self-contained (its handler is set as ``func`` and returns an exit code).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controlplane.cli_format import progress
from controlplane.policy.registry import POLICY_NAMES, POLICY_SPECS, make_policy
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
    if budget_mb <= 0:
        raise SimulateInputError(f"--budget-mb must be positive, got {budget_mb}")
    if plan_period_s <= 0:
        raise SimulateInputError(f"--plan-period must be positive, got {plan_period_s}")
    if param is not None and len(policies) > 1:
        raise SimulateInputError("--param needs a single --policy (its meaning differs)")
    models = read_models(models_path)
    trace = read_trace(trace_path, known_models=models)
    results = []
    for number, name in enumerate(policies, 1):
        try:
            policy = make_policy(name, models, param, epoch_offset_s=epoch_offset_s,
                                 trace=trace if name == "oracle" else None)
        except ValueError as exc:
            raise SimulateInputError(f"{name}: {exc}") from None
        with progress(f"simulating {name} ({number}/{len(policies)})"):  # on a terminal
            result = simulate(trace, models, budget_mb, policy, plan_period_s=plan_period_s,
                              param=param if param is not None else _default_param(name))
        results.append(result)
        if events_out is not None:
            write_events(events_path_for(Path(events_out), name, len(policies) > 1),
                         result.events)
    return results


def _default_param(name: str) -> float | None:
    return next(spec.default_param for spec in POLICY_SPECS if spec.name == name)


def _table(results: Sequence[SimResult]) -> str:
    header = (f"{'POLICY':<17} {'PARAM':>9} {'REQUESTS':>9} {'COLD':>7} {'RATE':>8} "
              f"{'P99 WAIT':>9} {'MEAN WAIT':>10} {'MEMORY GB*s':>12} {'OVER':>5}")
    lines = [header]
    for r in results:
        m = r.metrics
        param = "-" if r.param is None else f"{r.param:g}"
        lines.append(f"{r.policy:<17} {param:>9} {m.requests:>9} {m.cold_starts:>7} "
                     f"{m.cold_start_rate:>8.4f} {m.p99_wait_s:>8.2f}s {m.mean_wait_s:>9.3f}s "
                     f"{m.memory_gb_s:>12.0f} {m.budget_violations:>5}")
    return "\n".join(lines)


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        policies = parse_policy_list(args.policy)
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
        print(_table(results))
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
    p.add_argument("--budget-mb", type=float, required=True, help="memory budget in MB")
    p.add_argument("--policy", default="ours", help="a policy name, a comma list, or 'all'")
    p.add_argument("--param", type=float, help="the policy's parameter (single policy only)")
    p.add_argument("--events-out", type=Path,
                   help="write EVENTS.csv (time,model,event); with several policies one file "
                        "each, named EVENTS.<policy>.csv")
    p.add_argument("--plan-period", type=float, default=DEFAULT_PLAN_PERIOD_S,
                   help="seconds between periodic plan() calls (default %(default)s)")
    p.add_argument("--epoch-offset", type=float, default=DEFAULT_EPOCH_OFFSET_S,
                   help="Unix time of trace second 0, for time-of-day features "
                        "(default: a Monday midnight UTC)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_simulate)
