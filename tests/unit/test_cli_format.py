"""The CLI's status table, progress line, ``--version`` and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import UTC, timedelta, timezone

import pytest

from controlplane import __version__
from controlplane.cli import build_parser
from controlplane.cli_format import (
    drain_lines,
    fit,
    instances_table,
    plan_lines,
    progress,
    rollout_line,
    rollouts_table,
    scaling_lines,
    status_table,
)
from controlplane.observability.logs import configure_logging


def _model(name: str, reason: str | None) -> dict[str, object]:
    return {"name": name, "state": "failed", "pinned": False, "memory_bytes": 3 << 20,
            "load_s": 1.5, "reason": reason}


def test_status_lines_fit_the_terminal_unless_wide() -> None:
    long = "load failed: " + "Traceback line\n  File x.py\n" * 50
    lines = status_table([_model("a", long), _model("thumbnail_scorer_v2", None)], width=100)
    assert all(len(line) <= 100 for line in lines)
    assert lines[1].endswith("...") and "\n" not in lines[1]
    assert lines[2].startswith("thumbnail_scorer_v2 failed")
    wide = status_table([_model("a", long)], width=100, wide=True)
    assert len(wide[1]) > 1000


def test_fit() -> None:
    assert fit("a  b\nc", 10) == "a b c"
    assert fit("abcdefghijk", 6) == "abc..."


def test_progress_shows_elapsed_and_clears_its_line() -> None:
    out = io.StringIO()
    with progress("loading m", out, interval_s=0.01, force=True):
        time.sleep(0.05)
    text = out.getvalue()
    assert "loading m" in text and text.endswith("\r\033[K")
    quiet = io.StringIO()  # not a terminal: nothing
    with progress("loading m", quiet):
        pass
    assert quiet.getvalue() == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"warmctl {__version__}"


def test_json_logs_one_object_per_line() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("httpx").level)
    configure_logging("warning", "json", stream=out)
    try:
        log = logging.getLogger("controlplane.test")
        log.info("not shown")
        log.warning("model %s failed", "m")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("with trace")
        records = [json.loads(line) for line in out.getvalue().splitlines()
                   if line.startswith("{")]
        assert [r["message"] for r in records] == ["model m failed", "with trace"]
        assert records[0]["level"] == "warning" and records[0]["logger"] == "controlplane.test"
        assert "ValueError: boom" in records[1]["exception"]
        assert logging.getLogger("httpx").level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(saved[2])


def _replica(instance: str, state: str) -> dict[str, object]:
    return {"instance": instance, "state": state}


def test_status_shows_where_models_are_once_there_are_several_instances() -> None:
    one = {**_model("m", None), "replicas": [_replica("default", "ready")]}
    assert status_table([one], width=120)[0].split()[-1] == "REASON"  # unchanged: one instance
    models = [{**_model("m", "why"), "state": "ready",
               "replicas": [_replica("a", "ready"), _replica("b", "loading")]},
              {**_model("cold_one", None), "state": "cold",
               "replicas": [_replica("a", "cold"), _replica("b", "cold")]}]
    lines = status_table(models, width=120)
    assert lines[0].split()[-2:] == ["INSTANCES", "REASON"]
    assert lines[1].split()[-2:] == ["a,b(loading)", "why"]
    assert lines[2].split()[-1] == "-"
    assert all(len(line) <= 120 for line in lines)


def _instance(name: str, **values: object) -> dict[str, object]:
    return {"name": name, "provider": "embedded", "state": "serving", "reason": None,
            "routable": True, "draining": False, "outstanding": 0, "memory_budget_mb": None,
            "memory_used_mb": 0.0, "models": {}, **values}


def test_instances_table() -> None:
    lines = instances_table([
        _instance("a", outstanding=3, memory_budget_mb=2048.0, memory_used_mb=512.4,
                  models={"m": "ready", "n": "loading"}),
        _instance("triton-b", state="draining", routable=False, draining=True,
                  state_reason="drained by the operator"),
        _instance("c", state="restarting", routable=False, reason="exited with code 1")])
    assert lines[0].split()[:5] == ["NAME", "PROVIDER", "STATE", "ROUTING", "IN-FLIGHT"]
    assert lines[1].split() == ["a", "embedded", "serving", "yes", "3", "512", "MB", "/", "2048",
                                "MB", "m,", "n", "(loading)"]
    assert lines[2].split()[:4] == ["triton-b", "embedded", "draining", "draining"]
    assert lines[2].split()[-3:] == ["/", "unlimited", "-"]
    assert lines[3].strip() == "drained by the operator"  # why it is not serving, under it
    assert lines[4].split()[2:4] == ["restarting", "no"]
    assert lines[5].strip() == "exited with code 1"  # its Triton's reason comes first


def test_drain_lines() -> None:
    lines = drain_lines({"instance": "b", "waited_s": 1.234, "in_flight_left": 0,
                         "moved": {"m": "a", "p": "already ready elsewhere",
                                   "q": "failed: no Triton instance can load 'q' now"},
                         "unloaded": ["m", "p"], "errors": {"q": "unload timed out"}})
    assert lines == ["b: drained (waited 1.2s for requests in flight, 0 left)",
                     "  m: ready on a", "  p: already ready elsewhere",
                     "  q: failed: no Triton instance can load 'q' now",
                     "  unloaded: m, p", "  q: unload failed: unload timed out"]


def _plan_model(model: str, **values: object) -> dict[str, object]:
    return {"model": model, "state": "ready", "level": "cpu", "decision": "keep",
            "requests_per_day": 86400.0, "cold_starts_per_day_if_lazy": None,
            "warm_cost_gbh_per_day": 1.0, "why": "hot", "replicas": [], "unplaced": None,
            **values}


def test_plan_lines_show_replicas_and_instances() -> None:
    plan = {"policy": "ours", "param": None, "budget_mb": None, "resident_mb": 200.0,
            "models": [_plan_model("hot", replicas=[{"instance": "a", "why": "hot: 2 asked"},
                                                    {"instance": "b", "why": "hot: 2 asked"}]),
                       _plan_model("big", unplaced="fits on no instance")],
            "instances": [{"name": "a", "routable": True, "draining": False,
                           "memory_budget_mb": 1000.0, "memory_used_mb": 200.0,
                           "planned": ["hot"]},
                          {"name": "b", "routable": False, "draining": True,
                           "memory_budget_mb": None, "memory_used_mb": 0.0, "planned": []}]}
    lines = plan_lines(plan)
    assert lines[0] == "policy ours (param none), budget unlimited, resident 200 MB"
    assert plan_lines({**plan, "param": 3000.0})[0].startswith("policy ours (param 3000),")
    # a long name or decision widens its column rather than pushing the rest out of line
    wide = plan_lines({**plan, "models": [_plan_model("history_ranker_compiled"),
                                          _plan_model("hot", decision="held cold")]})
    assert wide[1].index("STATE") == wide[2].index(" ready") + 1 == wide[3].index(" ready") + 1
    assert wide[2].index("86400.0") == wide[3].index("86400.0")
    assert wide[1].index("REQ/DAY") - wide[1].index("DECISION") >= len("held cold")
    assert "REPLICAS" in lines[1].split()
    hot = lines[2].split()
    assert hot[0] == "hot" and hot[hot.index("1.0") + 1] == "a,b" and hot[-1] == "hot"
    assert lines[3].split() == ["on", "a:", "hot:", "2", "asked"]
    assert lines[5].split()[0] == "big" and lines[6].strip() == "unplaced: fits on no instance"
    assert lines[9].split() == ["a", "yes", "200", "MB", "/", "1000", "MB", "hot"]
    assert lines[10].split() == ["b", "draining", "0", "MB", "/", "unlimited", "-"]


def _ramp(instance: str, model: str, **values: object) -> dict[str, object]:
    return {"instance": instance, "model": model, "weight": 0.25, "started_s_ago": 7.6,
            "paused": False, "why": None, "error_rate": 0.0, "peers_error_rate": 0.001,
            "p50_s": 0.0123, "peers_p50_s": 0.011, **values}


def _scaling(**values: object) -> dict[str, object]:
    return {"enabled": True, "instances": {"serving": 2, "warming": 0, "standby": 1,
                                           "draining": 0, "provisioning": 1},
            "min_instances": 2, "max_instances": 6, "standby_target": 1, "warm_up_s": 38.25,
            "lead_s": 68.25, "decisions": [], "ramps": [], **values}


def test_scaling_lines_summary_decisions_and_ramps() -> None:
    lines = scaling_lines(_scaling(
        decisions=[{"at": "2024-05-01T08:00:05.5+00:00", "action": "scale_out", "count": 2,
                    "target_instances": 4, "standby_wanted": 1,
                    "reasons": ["forecast 20.0 req/s at 08:01 needs 4 instances",
                                "a: 3.0 in flight per replica"],
                    "instances": ["auto-1", "auto-2"], "outcome": "started"},
                   {"at": 1714550400.0, "action": "none", "count": 0, "target_instances": 2,
                    "standby_wanted": 1, "reasons": [], "instances": [], "outcome": ""}],
        ramps=[_ramp("auto-1", "resnet"),
               _ramp("auto-2", "bert", weight=0.05, paused=True, p50_s=None,
                     why="error rate 8.0% against 0.1% on its peers")]))
    assert lines[:4] == [
        "autoscaler: on",
        "instances: 2 serving, 0 warming, 1 standby, 0 draining, 1 provisioning",
        "bounds: 2..6 serving, standby target 1",
        "lead time: 68.2s (start to warm: 38.2s measured); scale-outs for a forecast peak "
        "start this far ahead of it"]
    at = lines.index("decisions (newest first):")
    assert lines[at + 1].split() == ["AT", "ACTION", "COUNT", "TARGET", "STANDBY", "OUTCOME"]
    assert lines[at + 2].split() == ["2024-05-01", "08:00:05", "UTC", "scale_out", "2", "4",
                                     "1", "started", "(auto-1,", "auto-2)"]
    assert lines[at + 3:at + 5] == ["      forecast 20.0 req/s at 08:01 needs 4 instances",
                                    "      a: 3.0 in flight per replica"]
    # a decision to do nothing has no count; an epoch time reads as UTC
    assert lines[at + 5].split() == ["2024-05-01", "08:00:00", "UTC", "none", "-", "2", "1",
                                     "-"]
    at = lines.index("ramps in progress:")
    assert lines[at + 2].split() == ["auto-1", "resnet", "25%", "8s", "0.0%", "(0.1%)",
                                     "12ms", "(11ms)", "ramping"]
    assert lines[at + 3].split()[:3] == ["auto-2", "bert", "5%"]
    # no p50 of its own yet: a dash, its peers' beside it
    assert lines[at + 3].endswith("- (11ms)          paused: error rate 8.0% against 0.1% on "
                                  "its peers")
    assert len(lines) == at + 4


def test_scaling_lines_when_off_and_quiet() -> None:
    lines = scaling_lines(_scaling(enabled=False, warm_up_s=None,
                                   instances={"serving": 1, "restarting": 1},
                                   decisions=[{"at": "not a time", "action": "scale_in",
                                               "count": 1, "target_instances": 1,
                                               "standby_wanted": 0, "reasons": ["quiet"],
                                               "instances": [], "outcome": "refused"}]))
    assert lines[0].startswith("autoscaler: off ([autoscaler] enabled = false")
    # a state the summary does not know yet is still counted
    assert lines[1] == "instances: 1 serving, 1 restarting"
    assert "(start to warm: not measured yet)" in lines[3]
    assert lines[7].split() == ["not", "a", "time", "scale_in", "1", "1", "0", "refused"]
    assert lines[-2:] == ["", "ramps: none in progress"]
    assert scaling_lines(_scaling())[-3:] == ["decisions: none yet", "",
                                              "ramps: none in progress"]


def _rollout(**values: object) -> dict[str, object]:
    """A RolloutView as ``GET /models/{name}/rollouts`` answers one."""
    return {"id": 7, "model": "resnet", "active": "1", "version": "2", "state": "shifting",
            "step": 1, "share": 0.25, "reason": "step 2/4: 25% of the traffic",
            "origin": "operator", "options": {"steps": [5, 25, 50, 100], "dwell_s": 60.0},
            "verification": {"passed": True, "reason": "32 samples, p50 4.32 ms vs 4.10 ms",
                             "samples": 32, "active_p50_s": 0.0041, "target_p50_s": 0.00432,
                             "failures": []},
            "created_at": "2024-05-01T08:00:00+00:00",
            "updated_at": "2024-05-01T08:03:10.5+00:00", **values}


def test_rollouts_table_newest_first_with_its_verification() -> None:
    older = _rollout(id=12, active="10", version="11", state="rolled_back", step=-1,
                     share=0.0, origin="auto", updated_at="2024-04-30T23:59:59Z",
                     reason="verification failed: output 'y' differs",
                     verification={"passed": False, "samples": 3, "failures": ["x"]})
    assert rollouts_table([_rollout(), older], UTC) == [
        "ID  FROM→TO  STATE        STEP  SHARE  ORIGIN    UPDATED",
        " 7  1→2      shifting      2/4    25%  operator  2024-05-01 08:03:10",
        "    step 2/4: 25% of the traffic",
        "    verification: passed on 32 samples, p50 4.10 ms active vs 4.32 ms target",
        # an older rollout's verification is not repeated: its reason says what it found
        "12  10→11    rolled_back   0/4     0%  auto      2024-04-30 23:59:59",
        "    verification failed: output 'y' differs"]


def test_rollouts_table_times_in_the_zone_given() -> None:
    lines = rollouts_table([_rollout(updated_at="2024-05-01T23:30:00+00:00")],
                           timezone(timedelta(hours=2)))
    assert lines[1].endswith("  2024-05-02 01:30:00")
    # an unzoned time is the store's UTC; one that is no time at all is shown as it came
    lines = rollouts_table([_rollout(updated_at="2024-05-01T23:30:00", id=1),
                            _rollout(updated_at="soon", id=2)], timezone(timedelta(hours=2)))
    assert lines[1].endswith("operator  2024-05-02 01:30:00")
    assert lines[4].endswith("operator  soon")
    assert lines[4].startswith(" 2  1→2")


def test_rollouts_table_failed_verification_shows_the_first_failures() -> None:
    failures = [f"sample {i}: output 'y' differs: max abs diff 0.{i}" for i in range(5)]
    failed = _rollout(state="rolled_back", step=-1, share=0.0,
                      reason="verification failed: sample 0: output 'y' differs",
                      verification={"passed": False, "reason": failures[0], "samples": 1,
                                    "active_p50_s": 0.0041, "target_p50_s": None,
                                    "failures": failures})
    assert rollouts_table([failed], UTC)[2:] == [
        "    verification failed: sample 0: output 'y' differs",
        "    verification: failed on 1 sample, p50 4.10 ms active vs - target",
        "      sample 0: output 'y' differs: max abs diff 0.0",
        "      sample 1: output 'y' differs: max abs diff 0.1",
        "      sample 2: output 'y' differs: max abs diff 0.2",
        "      (and 2 more)"]


def test_rollouts_table_without_a_verification_yet() -> None:
    verifying = _rollout(state="verifying", step=-1, share=0.0, reason="", verification=None)
    assert rollouts_table([verifying], UTC) == [
        "ID  FROM→TO  STATE      STEP  SHARE  ORIGIN    UPDATED",
        " 7  1→2      verifying   0/4     0%  operator  2024-05-01 08:03:10",
        "    verification: under way"]
    # promoted at once (loaded nowhere): never verified live
    promoted = _rollout(state="promoted", step=3, share=1.0, reason="loaded nowhere",
                        verification=None, options={})
    assert rollouts_table([promoted], UTC)[1:] == [
        " 7  1→2      promoted     4   100%  operator  2024-05-01 08:03:10",
        "    loaded nowhere",
        "    verification: none"]


def test_rollout_line() -> None:
    assert rollout_line(_rollout()) == ("resnet: rollout 7 1→2 shifting, step 2/4 (25% of the "
                                        "traffic): step 2/4: 25% of the traffic")
    assert rollout_line(_rollout(state="verifying", step=-1, share=0.0, reason="",
                                 options={})) == (
        "resnet: rollout 7 1→2 verifying, step - (0% of the traffic)")
    assert rollout_line(_rollout(share=0.125, reason="a\n  b")).endswith(
        "(12.5% of the traffic): a b")
