"""bench/rollout.py's pure parts: the phase of a request against a rollout's stored moves,
the answers per version per phase, the memory figures, one rollout's summary and the
targets (the bench itself needs a tritonserver and a minute or two)."""

from __future__ import annotations

from typing import Any

from bench.rollout import (
    BAD,
    KINDS,
    MIB,
    STEPS,
    Answer,
    MemorySample,
    Move,
    Seen,
    Timeline,
    by_phase,
    memory_figures,
    phase_at,
    summarize_kind,
    targets,
)

#: a good rollout: POST at 100, verified at 101, steps at 101, 103, 105, promoted at 108
GOOD = Timeline("good", 100.0, [
    Move(101.0, "shifting", -1, 0.0), Move(101.0, "shifting", 0, 0.2),
    Move(103.0, "shifting", 1, 0.6), Move(105.0, "shifting", 2, 1.0),
    Move(108.0, "promoted", 2, 1.0)], verdict_at=101.0, verdict_passed=True)
#: a bad one caught at its first step: rolled back decided at 102.5, stored at 103
CAUGHT = Timeline("errors", 100.0, [
    Move(101.0, "shifting", -1, 0.0), Move(101.0, "shifting", 0, 0.2),
    Move(103.0, "rolled_back", 0, 0.0)], verdict_at=101.0, verdict_passed=True,
    rollback_at=102.5)


def _answers(model: str, start: float, end: float, version: str | None,
             status: str = "OK", every: float = 0.1) -> list[Answer]:
    n = round((end - start) / every)
    return [Answer(model, start + i * every, start + i * every + 0.003, version, status)
            for i in range(n)]


def test_a_request_gets_the_phase_that_was_stored_when_it_was_sent() -> None:
    assert phase_at(GOOD, 99.9) == "before"
    assert phase_at(GOOD, 100.5) == "verifying"  # no move stored yet
    assert phase_at(GOOD, 101.0) == "step1_20%"  # the verified move and step 1 at once
    assert phase_at(GOOD, 104.0) == "step2_60%"
    assert phase_at(GOOD, 107.9) == "step3_100%"
    assert phase_at(GOOD, 108.0) == "promoted"
    assert phase_at(GOOD, 500.0) == "promoted"
    verified_alone = Timeline("x", 0.0, [Move(1.0, "shifting", -1, 0.0),
                                         Move(2.0, "shifting", 0, 0.05)])
    assert phase_at(verified_alone, 1.5) == "verified"
    assert phase_at(verified_alone, 2.5) == "step1_5%"
    paused = Timeline("x", 0.0, [Move(1.0, "shifting", 0, 0.2), Move(2.0, "paused", 0, 0.2)])
    assert phase_at(paused, 2.5) == "paused"


def test_answers_are_counted_per_version_in_phase_order() -> None:
    answers = (_answers("good", 99.0, 101.0, "1") + _answers("good", 101.0, 103.0, "1")
               + _answers("good", 101.05, 103.05, "2", every=0.4)
               + [Answer("good", 106.0, 106.1, None, "UNAVAILABLE")]
               + _answers("good", 108.0, 109.0, "2"))
    counted = by_phase(list(reversed(answers)), GOOD)
    assert list(counted) == ["before", "verifying", "step1_20%", "step3_100%", "promoted"]
    assert counted["before"] == {"1": 10}
    assert counted["verifying"] == {"1": 10}
    assert counted["step1_20%"] == {"1": 20, "2": 5}
    assert counted["step3_100%"] == {"failed": 1}
    assert counted["promoted"] == {"2": 10}


def test_memory_is_the_peak_and_the_settled_figure_over_the_median_before() -> None:
    def at(t: float, mib: float, stub: float = 0.0, ones: int = 1) -> MemorySample:
        by = {"tritonserver": int((mib - stub) * MIB)} | (
            {"stub:good/2": int(stub * MIB)} if stub else {})
        count = {"tritonserver": 1, "stub:good/1": ones, "stub:other/1": 1} | (
            {"stub:good/2": 1} if stub else {})
        return MemorySample(t, int(mib * MIB), by, count)

    samples = [at(97.0, 500), at(98.0, 200), at(99.0, 210), at(99.5, 200),  # 97: too early
               at(101.0, 260, 40, ones=2), at(104.0, 290, 60), at(107.0, 250, 40),
               at(108.6, 240, 40), at(109.5, 230, 30), at(200.0, 999)]
    figures = memory_figures(samples, GOOD, 2.5, (108.5, 110.0), "good")
    assert figures["before_mib"] == 200.0
    assert figures["peak_mib"] == 290.0
    assert figures["extra_peak_mib"] == 90.0
    assert figures["after_mib"] == 235.0  # median of 240 and 230
    assert figures["extra_after_mib"] == 35.0
    assert figures["target_stub_peak_mib"] == 60.0
    # the last sample before the start against the last one after
    assert figures["after_minus_before_by_process_mib"] == {"stub:good/2": 30.0}
    # version 1 twice at once: Triton loaded it anew beside the old one
    assert figures["stubs_by_version"] == {"before": {"1": 1}, "most": {"1": 2, "2": 1},
                                           "after": {"1": 1, "2": 1}}
    none = memory_figures([], GOOD, 2.5, (108.5, 110.0), "good")
    assert none["extra_peak_mib"] is None and none["after_minus_before_by_process_mib"] == {}


def _row(state: str, step: int, passed: bool = True) -> dict[str, Any]:
    return {"state": state, "reason": "r", "step": step,
            "verification": {"passed": passed, "samples": 7, "reason": "v"}}


def test_a_rollout_summary_counts_the_target_share_failures_and_cold_requests() -> None:
    answers = (_answers("errors", 99.0, 103.0, "1")
               + _answers("errors", 101.0, 102.5, "2", every=0.5)
               + [Answer("errors", 101.2, 101.21, None, "INTERNAL")]
               + [Answer("errors", 104.0, 104.01, None, "UNAVAILABLE")]  # in the settle time
               + [Answer("errors", 200.0, 200.01, None, "UNAVAILABLE")])  # long after
    seen = [Seen("errors", 101.2, "2", "INTERNAL", False),
            Seen("errors", 102.0, "1", "OK", True), Seen("errors", 99.0, "", "OK", True)]
    out = summarize_kind(CAUGHT, _row("rolled_back", 0), answers, seen, settle_s=2.0)
    # from the POST (100) to the stored rollback (103): 30 from v1, 3 from v2, 1 failed
    assert out["during"] == {"requests": 34, "from_target": 3, "target_share": 0.0882}
    assert out["failed"] == {"client": 2, "by_status": {"INTERNAL": 1, "UNAVAILABLE": 1},
                             "observed": 1}
    assert out["cold"] == 1
    assert out["verdict_s"] == 1.0
    assert out["detect_s"] == 2.5  # the decision, not the stored rolled_back
    assert out["finished_s"] == 3.0
    assert out["requests_by_phase"]["step1_20%"] == {"1": 20, "2": 3, "failed": 1}
    assert [m["state"] for m in out["moves"]] == ["shifting", "shifting", "rolled_back"]
    # a good rollout's detect_s is its verdict
    good = summarize_kind(GOOD, _row("promoted", 2), [], [], settle_s=2.0)
    assert good["detect_s"] == good["verdict_s"] == 1.0 and good["finished_s"] == 8.0
    assert good["during"]["target_share"] == 0.0


def _result(state: str, *, share: float = 0.0, finished_s: float | None = 2.0,
            failed: int = 0, observed: int = 0, cold: int = 0) -> dict[str, Any]:
    return {"state": state, "during": {"target_share": share}, "finished_s": finished_s,
            "failed": {"client": failed, "observed": observed}, "cold": cold}


def test_the_targets_hold_for_a_clean_run_and_each_fails_on_its_own() -> None:
    clean = {"good": _result("promoted", share=0.7, finished_s=20.0)} | {
        k: _result("rolled_back") for k in BAD}
    assert set(clean) == set(KINDS)
    assert all(targets(clean, STEPS).values())

    def broken(kind: str, **kw: Any) -> set[str]:
        out = targets(clean | {kind: _result(**kw)}, STEPS)
        return {k for k, v in out.items() if not v}

    assert broken("good", state="rolled_back", share=0.1) == {"good_promoted"}
    assert broken("good", state="promoted", failed=1) == {"good_zero_failed"}
    assert broken("good", state="promoted", observed=2) == {"good_zero_failed"}
    assert broken("good", state="promoted", cold=1) == {"good_zero_cold"}
    assert broken("slow", state="promoted", finished_s=9.0) == {"bad_all_rolled_back"}
    # the first step's share (20 %) plus the tolerance (2 points)
    assert broken("nan", state="rolled_back", share=0.219) == set()
    assert broken("nan", state="rolled_back", share=0.23) == {
        "bad_no_client_answer_beyond_first_step_share"}
    assert broken("errors", state="rolled_back", finished_s=31.0) == {
        "bad_rolled_back_within_s"}
    assert broken("errors", state="rolled_back", finished_s=None) == {
        "bad_rolled_back_within_s"}
    # a bad kind that did not run: no bad target holds
    missing = targets({k: v for k, v in clean.items() if k != "disagree"}, STEPS)
    assert not missing["bad_all_rolled_back"] and missing["good_promoted"]
