"""Rollouts under load: a good version 2 and each bad kind, one embedded Triton (issue 20).

    python bench/rollout.py [--quick] [--json-out PATH] [--rate 80] [--dwell-s 4]

Models ``good``, ``nan``, ``slow``, ``errors`` and ``disagree`` (``tests/support/versions.py``:
each answer carries the number of the version that computed it) serve version 1, pinned,
with ``sample_payloads``; ``--clients`` loops send ``--rate`` requests/s in all through the
gateway, ``FOCUS_SHARE`` of them to the model being rolled out, the rest spread over all
five. For each kind in turn: its version 2 folder appears (``add_version(..., kind=kind)``),
``POST /models/{kind}/rollouts {"version": "2"}`` starts the rollout, and it is followed
until it is over. Per kind: the final state and reason; the client's answers per version in
each phase (before, verifying, each step, after), by send time against the rollout's stored
moves (hooked, exact); failed and cold requests (client records and the recorder's
observations); time from the start to the verdict, to the decision to roll back
(``detect_s``) and to the final state; the extra memory of tritonserver and its Python stubs
(``/proc`` VmRSS) while the rollout ran and after. The live part is in ``rollout_live.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine

KINDS = ("good", "nan", "slow", "errors", "disagree")
BAD = KINDS[1:]
STEPS = (20.0, 60.0, 100.0)
#: a bad version's answers may exceed the first step's share by this much (sampling noise)
SHARE_TOLERANCE = 0.02
#: each bad version rolled back within this many seconds of its start
ROLLED_BACK_WITHIN_S = 30.0
FINAL = ("promoted", "rolled_back", "aborted")
MIB = 2**20


@dataclass(frozen=True)
class Answer:
    """One client request: epoch seconds; ``version`` from its VERSION output (None when it
    failed); ``status`` OK, WRONG (a wrong OUTPUT0) or the gRPC status name."""

    model: str
    sent: float
    done: float
    version: str | None
    status: str


@dataclass(frozen=True)
class Move:
    """A rollout's stored move (state, step, share) at epoch ``at``."""

    at: float
    state: str
    step: int
    share: float


@dataclass(frozen=True)
class Seen:
    """What the recorder saw of one request (``Observation``'s fields that count here)."""

    model: str
    arrived_at: float
    version: str
    outcome: str
    cold: bool


@dataclass(frozen=True)
class MemorySample:
    """tritonserver plus its children (Python stubs): VmRSS bytes, in all and by process
    (``tritonserver`` or ``stub:<model>/<version>``), at epoch ``at``."""

    at: float
    total: int
    by_process: dict[str, int] = field(default_factory=dict)
    #: processes by the same key (two stubs of one version: Triton loads it anew)
    count: dict[str, int] = field(default_factory=dict)


@dataclass
class Timeline:
    """One rollout: the POST, its moves, the verdict and the decision to roll back (epoch)."""

    kind: str
    start: float
    moves: list[Move] = field(default_factory=list)
    verdict_at: float | None = None
    verdict_passed: bool | None = None
    rollback_at: float | None = None

    @property
    def end(self) -> float | None:
        return next((m.at for m in self.moves if m.state in FINAL), None)


def phase_at(timeline: Timeline, t: float) -> str:
    """The rollout's phase at epoch ``t``: before, verifying, ``stepN_P%`` (N from 1),
    paused, or its final state once it is over."""
    if t < timeline.start:
        return "before"
    last = None
    for move in timeline.moves:
        if move.at > t:
            break
        last = move
    if last is None or last.state == "verifying":
        return "verifying"
    if last.state == "shifting":
        return "verified" if last.step < 0 else f"step{last.step + 1}_{last.share * 100:g}%"
    return last.state


def by_phase(answers: Sequence[Answer], timeline: Timeline) -> dict[str, dict[str, int]]:
    """Phase -> version (``failed`` for no version) -> answers sent then, phases in order."""
    out: dict[str, Counter[str]] = {}
    for a in sorted(answers, key=lambda a: a.sent):
        phase = phase_at(timeline, a.sent)
        out.setdefault(phase, Counter())[a.version or "failed"] += 1
    return {p: dict(sorted(c.items())) for p, c in out.items()}


def memory_figures(samples: Sequence[MemorySample], timeline: Timeline,
                   before_s: float, after: tuple[float, float], model: str
                   ) -> dict[str, Any]:
    """MiB: the median before the start (``before_s``), the peak while the rollout ran, the
    median in ``after`` (epoch window), the extra of each over before; version 2's stub at
    its peak; ``model``'s stubs (by version) before, at most while it ran, and after; by
    process, what changed by 1 MiB or more from the last sample before
    the start to the last one in ``after``."""
    end = timeline.end or timeline.start

    def mib(v: float | None) -> float | None:
        return None if v is None else round(v / MIB, 1)

    base = [s.total for s in samples if timeline.start - before_s <= s.at < timeline.start]
    during = [s.total for s in samples if timeline.start <= s.at <= end]
    later = [s.total for s in samples if after[0] <= s.at <= after[1]]
    before = statistics.median(base) if base else None
    peak = max(during) if during else None
    settled = statistics.median(later) if later else None
    target, prefix = f"stub:{model}/2", f"stub:{model}/"
    stub = max((s.by_process.get(target, 0) for s in samples
                if timeline.start <= s.at <= end), default=0)

    def stubs(s: MemorySample) -> dict[str, int]:
        return {k.removeprefix(prefix): n for k, n in sorted(s.count.items())
                if k.startswith(prefix)}

    most: dict[str, int] = {}
    for s in samples:
        if timeline.start <= s.at <= end:
            for version, n in stubs(s).items():
                most[version] = max(most.get(version, 0), n)
    first = [s for s in samples if timeline.start - before_s <= s.at < timeline.start]
    last = [s for s in samples if after[0] <= s.at <= after[1]]
    changed: dict[str, float | None] = {}
    if first and last:  # by process: the last sample before the start, the last after
        a, b = first[-1].by_process, last[-1].by_process
        for key in sorted(set(a) | set(b)):
            delta = b.get(key, 0) - a.get(key, 0)
            if abs(delta) >= MIB:
                changed[key] = mib(delta)
    return {"before_mib": mib(before), "peak_mib": mib(peak), "after_mib": mib(settled),
            "extra_peak_mib": mib(None if before is None or peak is None else peak - before),
            "extra_after_mib": mib(None if before is None or settled is None
                                   else settled - before),
            "target_stub_peak_mib": mib(stub),
            "stubs_by_version": {"before": stubs(first[-1]) if first else None, "most": most,
                                 "after": stubs(last[-1]) if last else None},
            "after_minus_before_by_process_mib": changed}


def summarize_kind(timeline: Timeline, row: dict[str, Any], answers: Sequence[Answer],
                   seen: Sequence[Seen], settle_s: float) -> dict[str, Any]:
    """One rollout's figures: ``answers`` and ``seen`` are the rolled-out model's, sent from
    the start to the final move plus ``settle_s`` (failed and cold) or to the final move
    (the target's share)."""
    end = timeline.end
    stop = end if end is not None else max((a.sent for a in answers), default=timeline.start)
    during = [a for a in answers if timeline.start <= a.sent <= stop]
    window = [a for a in answers if timeline.start <= a.sent <= stop + settle_s]
    seen_window = [o for o in seen if timeline.start <= o.arrived_at <= stop + settle_s]
    from_target = sum(1 for a in during if a.version == "2")
    failed = [a for a in window if a.status != "OK"]

    def after_start(t: float | None) -> float | None:
        return None if t is None else round(t - timeline.start, 3)
    verification = row.get("verification") or {}
    return {
        "state": row.get("state"), "reason": row.get("reason"), "step": row.get("step"),
        "verification": {k: verification.get(k) for k in
                         ("passed", "samples", "reason", "active_p50_s", "target_p50_s")},
        "requests_by_phase": by_phase(answers, timeline),
        "during": {"requests": len(during), "from_target": from_target,
                   "target_share": round(from_target / len(during), 4) if during else 0.0},
        "failed": {"client": len(failed), "by_status": dict(Counter(a.status for a in failed)),
                   "observed": sum(1 for o in seen_window if o.outcome != "OK")},
        "cold": sum(1 for o in seen_window if o.cold),
        "verdict_s": after_start(timeline.verdict_at),
        "detect_s": after_start(timeline.rollback_at if timeline.rollback_at is not None
                                else timeline.verdict_at),
        "finished_s": after_start(end),
        "moves": [{"after_s": after_start(m.at), "state": m.state, "step": m.step,
                   "share": m.share} for m in timeline.moves],
    }


def targets(results: dict[str, dict[str, Any]], steps: Sequence[float],
            within_s: float = ROLLED_BACK_WITHIN_S) -> dict[str, bool]:
    good = results.get("good", {})
    bad = [results[k] for k in BAD if k in results]
    limit = steps[0] / 100 + SHARE_TOLERANCE
    return {
        "good_promoted": good.get("state") == "promoted",
        "good_zero_failed": bool(good) and good["failed"]["client"] == 0
        and good["failed"]["observed"] == 0,
        "good_zero_cold": bool(good) and good["cold"] == 0,
        "bad_all_rolled_back": len(bad) == len(BAD)
        and all(r["state"] == "rolled_back" for r in bad),
        "bad_no_client_answer_beyond_first_step_share": len(bad) == len(BAD)
        and all(r["during"]["target_share"] <= limit for r in bad),
        "bad_rolled_back_within_s": len(bad) == len(BAD)
        and all(r["finished_s"] is not None and r["finished_s"] <= within_s for r in bad),
    }


NOTES = [
    "One ControlPlane, one embedded tritonserver; rollouts.auto off, every rollout started "
    "by POST /models/{kind}/rollouts {\"version\": \"2\"}; times are seconds after the POST.",
    "requests_by_phase: the client's answers by send time against the rollout's moves, "
    "hooked on the rollout store's save (exact, not polled); the version is the model's own "
    "VERSION output, 'failed' when there was none. 'verifying' runs from the POST to the "
    "first stored move; answers sent after the decision to roll back but before the stored "
    "rolled_back still count in the phase they were sent in.",
    "verdict_s: the verifier's answer (wrapped); detect_s: the decision to roll back "
    "(Rollouts._roll_back entered, before the target is unloaded), or the verdict for a "
    "rollout that was not rolled back; finished_s: the final state stored.",
    "during.target_share: answers from version 2 over all of the model's answers sent from "
    "the POST to the final state. failed and cold: from the POST to the final state plus "
    "the settle time; failed.client from the client's records (a wrong OUTPUT0 counts), "
    "failed.observed and cold from the recorder's observations (on_observation hook).",
    "memory: VmRSS of tritonserver plus its child processes (the Python backend's stubs, one "
    "per model version), sampled every 0.25 s; before is the median over before_s ahead of "
    "the POST, after the median over the settle time after the final state. "
    "stubs_by_version: the model's stubs per version before, at most while the rollout ran, "
    "and after (2 for one version: Triton instantiated that version anew beside the old "
    "one). after.plugin_memory_bytes: warmctl's own per-model figure (null: not measured "
    "for these Python models).",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter steps and waits")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=80.0, help="requests/s, all clients")
    parser.add_argument("--dwell-s", type=float, default=None, help="seconds per step")
    parser.add_argument("--before-s", type=float, default=None, help="load before each POST")
    parser.add_argument("--settle-s", type=float, default=2.0, help="load after each rollout")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.dwell_s = args.dwell_s or (2.0 if args.quick else 4.0)
    args.before_s = args.before_s or (1.5 if args.quick else 3.0)
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in KINDS for k in kinds) or args.clients < 1 or args.rate <= 0:
        parser.error(f"--kinds from {','.join(KINDS)}; --clients and --rate positive")
    started = time.monotonic()
    from bench.rollout_live import run_all
    with tempfile.TemporaryDirectory(prefix="rollout-") as tmp:
        live = run_all(args, kinds, Path(tmp))
    results = live.pop("results")
    out = {"bench": "rollout", "machine": machine(), "quick": args.quick,
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "steps": list(STEPS), "results": results, **live,
           "targets": targets(results, STEPS), "notes": NOTES,
           "runtime_s": round(time.monotonic() - started, 1)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    return 0 if all(out["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
