"""The scale-out comparison on a small compressed diurnal trace with a morning spike."""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

from controlplane.policy.autoscale_sim import compare_autoscaling
from controlplane.policy.autoscale_types import AutoscaleOptions
from controlplane.policy.cli import add_simulate_parser, cmd_simulate
from controlplane.policy.trace_io import write_models, write_trace
from controlplane.policy.types import ModelProfile

DAY = 1200.0  # a compressed day
SPIKE = (400.0, 520.0)  # its morning spike, within each day
MODELS = {"ranker": ModelProfile("ranker", 2000.0, 8.0), "embed": ModelProfile("embed", 800.0, 4.0),
          "rare": ModelProfile("rare", 100.0, 1.0)}
OPTIONS = AutoscaleOptions(
    min_instances=2, max_instances=4, standby=0, scale_out_cooldown_s=30.0,
    scale_in_cooldown_s=200.0, max_in_flight_per_replica=8.0, latency_ratio=2.0,
    lead_margin_s=20.0, default_warm_up_s=30.0, rate_per_replica=5.0, instance_budget_mb=None,
    interval_s=5.0, measured_window_s=30.0)
START_S = 10.0


def diurnal_trace(days: int = 2, seed: int = 5) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    rows: list[tuple[float, str]] = []

    def base(t: float) -> float:
        return 1.0 + 0.75 * (1 - math.cos(2 * math.pi * (t % DAY) / DAY))

    def ranker(t: float) -> float:
        return 14.0 if SPIKE[0] <= t % DAY < SPIKE[1] else base(t)

    for model, rate, peak in (("ranker", ranker, 14.0), ("embed", lambda t: 0.4 * base(t), 1.0),
                              ("rare", lambda t: 0.02, 0.02)):
        t = 0.0
        while (t := t + rng.expovariate(peak)) < days * DAY:
            if rng.random() * peak < rate(t):
                rows.append((t, model))
    return sorted(rows)


@pytest.fixture(scope="module")
def compared() -> dict[str, Any]:
    return compare_autoscaling(diurnal_trace(), MODELS, None, OPTIONS, 2, cycle_s=DAY,
                               instance_start_s=START_S,
                               spikes=[(d * DAY + SPIKE[0], d * DAY + SPIKE[1]) for d in (0, 1)])


def test_prewarmed_joins_cause_no_waits_and_the_others_do(compared: dict[str, Any]) -> None:
    r = compared["results"]
    assert compared["options"]["measure_from_s"] == DAY  # day 1 teaches the forecast
    assert r["prewarmed"]["scale_waits"] == r["prewarmed"]["waited"] == 0
    assert r["reactive"]["scale_waits"] > 0 and r["unaware"]["scale_waits"] > 0
    for name in ("reactive", "unaware"):
        assert r[name]["spike"]["waited"] > 0 and r[name]["steady"]["waited"] == 0
        assert r[name]["spike"]["p99_wait_s"] > 0
    assert r["prewarmed"]["spike"]["p99_wait_s"] == 0.0
    assert len({r[n]["requests"] for n in r}) == 1  # the same trace
    json.dumps(compared)  # JSON-able


def test_prewarmed_scales_out_ahead_of_the_spike(compared: dict[str, Any]) -> None:
    spike_2 = DAY + SPIKE[0]
    outs = {name: [e for e in res["scale_events"]
                   if e["action"] == "scale_out" and DAY <= e["at"] < spike_2 + 60]
            for name, res in compared["results"].items()}
    ours = outs["prewarmed"][0]
    assert spike_2 - 60 <= ours["at"] < spike_2  # within the lead, not earlier
    # the spike's rate, read from day 1 by the seasonal forecast, asks for 3 replicas
    assert any(re.search(r"ranker: forecast 1[0-9.]+/s within .* needs 3 replica", reason)
               for reason in ours["reasons"])
    assert all(e["at"] > spike_2 for e in outs["reactive"])  # measured: only once it came
    added = [f for f in compared["results"]["prewarmed"]["decision_to_first_request_s"]
             if f["decided_at"] == ours["at"]]
    # it got traffic only after booting and loading the ranker
    assert added and added[0]["first_request_s"] >= START_S + MODELS["ranker"].load_s
    reactive = compared["results"]["reactive"]["decision_to_first_request_s"]
    assert all(f["first_request_s"] < START_S + 1.0 for f in reactive)


def test_scale_in_follows_the_spike(compared: dict[str, Any]) -> None:
    for res in compared["results"].values():
        ins = [e["at"] for e in res["scale_events"] if e["action"] == "scale_in"]
        outs = [e["at"] for e in res["scale_events"] if e["action"] == "scale_out"]
        assert ins and min(ins) - min(outs) >= OPTIONS.scale_in_cooldown_s
        assert 3 <= res["max_instances"] <= OPTIONS.max_instances
        # day 2 (the measured one): 2 instances always, at most one or two more for a while
        assert 2 * DAY < res["instance_seconds"] < 3 * DAY


def test_unknown_strategy_and_model_raise() -> None:
    with pytest.raises(ValueError, match="unknown strategies"):
        compare_autoscaling([], MODELS, None, OPTIONS, 2, strategies=["magic"])
    with pytest.raises(ValueError, match="unknown models: nope"):
        compare_autoscaling([(1.0, "nope")], MODELS, None, OPTIONS, 2)


def test_cli_simulate_autoscale_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            ) -> None:
    write_trace(tmp_path / "trace.csv", diurnal_trace(days=2, seed=6))
    write_models(tmp_path / "models.csv", MODELS)
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--trace", str(tmp_path / "trace.csv"), "--models",
                              str(tmp_path / "models.csv"), "--budget-mb", "8000",
                              "--instances", "2", "--max-instances", "3", "--autoscale",
                              "--cycle", str(DAY), "--json"])
    assert cmd_simulate(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == {"prewarmed", "reactive", "unaware"}
    assert out["options"]["max_instances"] == 3
    assert all(r["max_instances"] <= 3 for r in out["results"].values())
    args.json = False
    assert cmd_simulate(args) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("STRATEGY") and "prewarmed" in table
    args.instances = None
    assert cmd_simulate(args) == 2
    assert "--autoscale needs --instances" in capsys.readouterr().err
