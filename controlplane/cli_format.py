"""What the CLI prints: tables that fit the terminal, and progress for long calls."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from typing import Any, TextIO

_SPINNER = "|/-\\"


def _fmt_bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def fit(text: str, width: int) -> str:
    """``text`` on one line within ``width`` characters (cut with ``...``)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:max(0, width - 3)] + "..."


def status_table(models: list[dict[str, Any]], width: int | None = None,
                 wide: bool = False) -> list[str]:
    """``warmctl status``'s model lines: the name column as wide as the longest name (up to
    40), and each reason cut to what is left of the terminal, unless ``wide``. When the
    models span several instances (``replicas``), an INSTANCES column says where each is
    resident (``a,b(loading)``)."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    name_w = min(40, max([len("MODEL"), *(len(m["name"]) for m in models)]))
    where = [_where(m.get("replicas") or []) for m in models]
    fleet = any(len(m.get("replicas") or []) > 1 for m in models)
    where_w = max([len("INSTANCES"), *(len(x) for x in where)]) if fleet else 0
    column = f"{'INSTANCES':<{where_w}}  " if fleet else ""
    lines = [f"{'MODEL':<{name_w}} {'STATE':<10} {'PIN':<4} {'MEMORY':>9} {'LOAD':>7}  "
             f"{column}REASON"]
    prefix = name_w + 1 + 10 + 1 + 4 + 1 + 9 + 1 + 7 + 2 + len(column)
    for m, at in zip(models, where, strict=True):
        load = "-" if m["load_s"] is None else f"{m['load_s']:.2f}s"
        reason = " ".join((m["reason"] or "").split())
        if not wide:
            reason = fit(reason, max(20, width - prefix))
        lines.append(f"{fit(m['name'], name_w):<{name_w}} {m['state']:<10} "
                     f"{'yes' if m['pinned'] else '':<4} {_fmt_bytes(m['memory_bytes']):>9} "
                     f"{load:>7}  {f'{at:<{where_w}}  ' if fleet else ''}{reason}")
    return lines


def _where(replicas: list[dict[str, Any]]) -> str:
    """Where a model is resident: ``a,b(loading)``; ``-`` when nowhere."""
    found = [r["instance"] + ("" if r["state"] == "ready" else f"({r['state']})")
             for r in replicas if r["state"] != "cold"]
    return ",".join(found) or "-"


def instances_table(instances: list[dict[str, Any]]) -> list[str]:
    """``warmctl instances``: one line per Triton instance."""
    name_w = min(30, max([len("NAME"), *(len(i["name"]) for i in instances)]))
    lines = [f"{'NAME':<{name_w}} {'PROVIDER':<8} {'STATE':<12} {'ROUTING':<9} "
             f"{'IN-FLIGHT':>9} {'MEMORY (USED/BUDGET)':>22}  MODELS"]
    for i in instances:
        routing = "draining" if i["draining"] else "yes" if i["routable"] else "no"
        budget = "unlimited" if i["memory_budget_mb"] is None \
            else f"{i['memory_budget_mb']:.0f} MB"
        memory = f"{i['memory_used_mb']:.0f} MB / {budget}"
        models = ", ".join(name + ("" if state == "ready" else f" ({state})")
                           for name, state in sorted(i["models"].items())) or "-"
        lines.append(f"{fit(i['name'], name_w):<{name_w}} {i['provider']:<8} "
                     f"{i['state']:<12} {routing:<9} {i['outstanding']:>9} {memory:>22}  "
                     f"{models}")
        why = i.get("reason") or i.get("state_reason")
        if why and i["state"] != "serving":
            lines.append(f"{'':<{name_w}} {fit(why, 100)}")
    return lines


def drain_lines(report: dict[str, Any]) -> list[str]:
    """``warmctl drain``: what moved where, what was waited for, what was unloaded."""
    lines = [f"{report['instance']}: drained (waited {report['waited_s']:.1f}s for requests "
             f"in flight, {report['in_flight_left']} left)"]
    for model, where in sorted(report["moved"].items()):
        plain = where.startswith(("failed", "already"))
        lines.append(f"  {model}: {where if plain else 'ready on ' + where}")
    if report["unloaded"]:
        lines.append("  unloaded: " + ", ".join(report["unloaded"]))
    for model, why in sorted((report.get("lingering") or {}).items()):
        lines.append(f"  {model}: stays for now, {why}")
    for model, error in sorted(report["errors"].items()):
        lines.append(f"  {model}: unload failed: {fit(error, 200)}")
    return lines


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """``warmctl plan``: the policy line, one line per model (its replicas: where the plan
    puts it), then each instance's budget and planned models, and what could not be placed."""
    budget = f"{plan['budget_mb']:.0f} MB" if plan["budget_mb"] else "unlimited"
    param = "none" if plan["param"] is None else f"{plan['param']:g}"  # None: no knob
    models = plan["models"]
    # columns as wide as their longest entry (model names run to 63 characters)
    name_w = min(63, max([18, *(len(m["model"]) for m in models)]))
    decision_w = max([8, *(len(m["decision"] or "-") for m in models)])
    lines = [f"policy {plan['policy']} (param {param}), budget {budget}, "
             f"resident {plan['resident_mb']:.0f} MB",
             f"{'MODEL':<{name_w}} {'STATE':<8} {'LEVEL':<7} {'DECISION':<{decision_w}} "
             f"{'REQ/DAY':>8} {'COLD/DAY':>8} {'GB*H/DAY':>8} {'REPLICAS':<12}  WHY"]
    for m in models:
        req, cold, cost = ("-" if m[k] is None else f"{m[k]:.1f}" for k in (
            "requests_per_day", "cold_starts_per_day_if_lazy", "warm_cost_gbh_per_day"))
        replicas = ",".join(r["instance"] for r in m.get("replicas") or []) or "-"
        lines.append(f"{fit(m['model'], name_w):<{name_w}} {m['state']:<8} {m['level']:<7} "
                     f"{m['decision'] or '-':<{decision_w}} {req:>8} {cold:>8} {cost:>8} "
                     f"{replicas:<12}  {m['why'] or ''}")
        for r in m.get("replicas") or []:
            if len(plan.get("instances") or []) > 1:
                lines.append(f"{'':<{name_w}}   on {r['instance']}: {r['why']}")
        if m.get("unplaced"):
            lines.append(f"{'':<{name_w}}   unplaced: {m['unplaced']}")
    instances = plan.get("instances") or []
    if instances:
        lines.append("")
        lines.append(f"{'INSTANCE':<18} {'ROUTING':<9} {'USED/BUDGET':>22}  PLANNED")
        for i in instances:
            routing = "draining" if i["draining"] else "yes" if i["routable"] else "no"
            budget = "unlimited" if i["memory_budget_mb"] is None \
                else f"{i['memory_budget_mb']:.0f} MB"
            used = f"{i['memory_used_mb']:.0f} MB / {budget}"
            lines.append(f"{i['name']:<18} {routing:<9} {used:>22}  "
                         f"{', '.join(i['planned']) or '-'}")
    return lines


_STATES = ("serving", "warming", "standby", "draining", "provisioning")


def scaling_lines(view: dict[str, Any]) -> list[str]:
    """``warmctl scaling``: whether the autoscaler is on, instances per state and its bounds,
    the lead time, then its decisions (newest first, each one's reasons indented under it),
    then the traffic ramps in progress.

    ``view`` is ``GET /scaling``'s JSON: ``enabled``, ``instances`` (state -> count),
    ``min_instances``, ``max_instances``, ``standby_target``, ``warm_up_s`` (None until an
    instance was timed from start to warm), ``lead_s``, ``decisions`` and ``ramps`` (lists of
    objects). Raises KeyError when a key the summary needs is missing.
    """
    counts = view.get("instances") or {}
    # the usual states in lifecycle order, then any the API adds later (never dropped)
    known = [s for s in _STATES if s in counts] + sorted(set(counts) - set(_STATES))
    warm_up = "not measured yet" if view.get("warm_up_s") is None \
        else f"{view['warm_up_s']:.1f}s measured"
    lines = [
        "autoscaler: " + ("on" if view["enabled"]
                          else "off ([autoscaler] enabled = false: instances change only "
                               "when an operator adds or removes them)"),
        "instances: " + (", ".join(f"{counts[s]} {s}" for s in known) or "none"),
        f"bounds: {view['min_instances']}..{view['max_instances']} serving, "
        f"standby target {view['standby_target']}",
        f"lead time: {view['lead_s']:.1f}s (start to warm: {warm_up}); scale-outs for a "
        "forecast peak start this far ahead of it",
    ]
    decisions = view.get("decisions") or []
    lines.append("")
    if not decisions:
        lines.append("decisions: none yet")
    else:
        lines.append("decisions (newest first):")
        lines.append(f"  {'AT':<23}  {'ACTION':<15} {'COUNT':>5} {'TARGET':>6} "
                     f"{'STANDBY':>7}  OUTCOME")
    for d in decisions:
        count = "-" if d["action"] == "none" else str(d["count"])
        names = d.get("instances") or []
        outcome = (d.get("outcome") or "-") + (f" ({', '.join(names)})" if names else "")
        lines.append(f"  {_when(d['at']):<23}  {d['action']:<15} {count:>5} "
                     f"{d['target_instances']:>6} {d['standby_wanted']:>7}  {outcome}")
        lines.extend(f"      {fit(reason, 200)}" for reason in d.get("reasons") or [])
    ramps = view.get("ramps") or []
    lines.append("")
    if not ramps:
        lines.append("ramps: none in progress")
        return lines
    lines.append("ramps in progress:")
    lines.append(f"  {'INSTANCE':<14} {'MODEL':<20} {'WEIGHT':>6} {'FOR':>6}  "
                 f"{'ERRORS (PEERS)':<15} {'P50 (PEERS)':<17} STATE")
    for r in ramps:
        errors = f"{_pct(r.get('error_rate'))} ({_pct(r.get('peers_error_rate'))})"
        p50 = f"{_ms(r.get('p50_s'))} ({_ms(r.get('peers_p50_s'))})"
        state = "paused" if r.get("paused") else "ramping"
        why = r.get("why")
        lines.append(f"  {fit(r['instance'], 14):<14} {fit(r['model'], 20):<20} "
                     f"{r['weight']:>6.0%} {r['started_s_ago']:>5.0f}s  {errors:<15} "
                     f"{p50:<17} {state}" + (f": {fit(why, 100)}" if why else ""))
    return lines


def _rollout_step(rollout: dict[str, Any]) -> str:
    """The step reached as ``2/4`` (``step`` is 0-based, -1 before the first), ``0/4`` before
    the first; without the steps in ``options``, the step alone (``-`` before the first)."""
    steps = (rollout.get("options") or {}).get("steps") or []
    step = int(rollout["step"])
    if steps:
        return f"{step + 1}/{len(steps)}"
    return "-" if step < 0 else str(step + 1)


def _share(value: float) -> str:
    """A share of 0..1 as a percentage: ``25%``, ``12.5%``."""
    pct = value * 100
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 0.05 else f"{pct:.1f}%"


def rollout_line(rollout: dict[str, Any]) -> str:
    """One rollout (``POST /models/{name}/rollouts`` and its actions) on one line: its model,
    id, versions, state, step, the new version's share of the traffic, and the reason."""
    reason = " ".join((rollout.get("reason") or "").split())
    return (f"{rollout['model']}: rollout {rollout['id']} {rollout['active']}→"
            f"{rollout['version']} {rollout['state']}, step {_rollout_step(rollout)} "
            f"({_share(rollout['share'])} of the traffic)"
            + (f": {fit(reason, 200)}" if reason else ""))


#: failed checks shown under the newest rollout's verification
_FAILURES_SHOWN = 3


def rollouts_table(rollouts: list[dict[str, Any]], tz: tzinfo | None = None) -> list[str]:
    """``warmctl rollout status``: one line per rollout as given (the API's order, newest
    first), its reason indented under it; under the newest, its verification (passed or
    failed, samples, the p50 of each version, the first failed checks). Times are shown in
    ``tz`` (default: the local zone).

    ``rollouts`` is ``GET /models/{name}/rollouts``'s JSON (see ``RolloutView``). Raises
    KeyError when a key a line needs is missing."""
    moves = [f"{r['active']}→{r['version']}" for r in rollouts]
    id_w = max([len("ID"), *(len(str(r["id"])) for r in rollouts)])
    move_w = min(30, max([len("FROM→TO"), *(len(m) for m in moves)]))
    state_w = max([len("STATE"), *(len(r["state"]) for r in rollouts)])
    steps = [_rollout_step(r) for r in rollouts]
    step_w = max([len("STEP"), *(len(s) for s in steps)])
    origin_w = max([len("ORIGIN"), *(len(r["origin"]) for r in rollouts)])
    lines = [f"{'ID':>{id_w}}  {'FROM→TO':<{move_w}}  {'STATE':<{state_w}}  "
             f"{'STEP':>{step_w}}  {'SHARE':>5}  {'ORIGIN':<{origin_w}}  UPDATED"]
    indent = " " * (id_w + 2)
    for n, (r, move, step) in enumerate(zip(rollouts, moves, steps, strict=True)):
        lines.append(f"{r['id']:>{id_w}}  {fit(move, move_w):<{move_w}}  "
                     f"{r['state']:<{state_w}}  {step:>{step_w}}  {_share(r['share']):>5}  "
                     f"{r['origin']:<{origin_w}}  {_local(r['updated_at'], tz)}")
        if r.get("reason"):
            lines.append(f"{indent}{fit(r['reason'], 200)}")
        if n == 0:
            lines.extend(indent + line for line in _verification_lines(r))
    return lines


def _verification_lines(rollout: dict[str, Any]) -> list[str]:
    found = rollout.get("verification")
    if not found:
        return ["verification: under way" if rollout["state"] == "verifying"
                else "verification: none"]
    samples = int(found.get("samples") or 0)
    lines = [f"verification: {'passed' if found.get('passed') else 'failed'} on "
             f"{samples} sample{'' if samples == 1 else 's'}, "
             f"p50 {_ms2(found.get('active_p50_s'))} active vs "
             f"{_ms2(found.get('target_p50_s'))} target"]
    failures = list(found.get("failures") or [])
    lines.extend(f"  {fit(f, 200)}" for f in failures[:_FAILURES_SHOWN])
    if len(failures) > _FAILURES_SHOWN:
        lines.append(f"  (and {len(failures) - _FAILURES_SHOWN} more)")
    return lines


def _ms2(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f} ms"


def _local(at: object, tz: tzinfo | None = None) -> str:
    """An ISO-8601 time to the second in ``tz`` (default: the local zone); an unzoned one is
    taken as UTC (the store's). What cannot be read is shown as it came."""
    try:
        moment = datetime.fromisoformat(str(at))
    except ValueError:
        return str(at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError):  # out of the local zone's range
        return str(at)


def _when(at: object) -> str:
    """A decision's time to the second in the zone the API gives it in, named (``UTC``),
    since an unzoned time would pass for local; an epoch number is taken as UTC. What cannot
    be read is shown as it came."""
    try:
        if isinstance(at, int | float):
            moment = datetime.fromtimestamp(at, UTC)
        else:
            moment = datetime.fromisoformat(str(at))
    except (ValueError, OverflowError, OSError):
        return str(at)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


@contextmanager
def progress(what: str, stream: TextIO | None = None, *, interval_s: float = 0.2,
             force: bool = False) -> Iterator[None]:
    """Show ``what`` with a spinner and the seconds elapsed while the block runs, on a
    terminal only (``force``: on any stream); the line is cleared at the end."""
    out = stream or sys.stderr
    if not (force or out.isatty()):
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        tick = 0
        while not done.wait(interval_s if tick else 0):
            out.write(f"\r{_SPINNER[tick % 4]} {what} {time.monotonic() - started:5.1f}s")
            out.flush()
            tick += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        out.write("\r\033[K")
        out.flush()
