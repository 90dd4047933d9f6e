from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from controlplane.policy.cli import add_simulate_parser
from controlplane.policy.trace_io import read_events


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="warmctl")
    sub = p.add_subparsers(dest="command", required=True)
    add_simulate_parser(sub)
    return p


def simulate(argv: list[str]) -> int:
    args = parser().parse_args(["simulate", *argv])
    code: int = args.func(args)
    return code


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    models = tmp_path / "models.csv"
    models.write_text("model,memory_mb,load_s\na,1024,2\nb,512,1\n")
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,model\n0.5,a\n1.0,a\n3.0,a\n4.0,b\n10.0,a\n")
    return trace, models


def test_simulate_prints_json_for_one_policy(files: tuple[Path, Path],
                                             capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    trace, models = files
    events = tmp_path / "events.csv"
    assert simulate(["--trace", str(trace), "--models", str(models), "--budget-mb", "4096",
                     "--policy", "lru", "--events-out", str(events), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget_mb"] == 4096
    (result,) = out["results"]
    assert result["policy"] == "lru"
    assert result["requests"] == 5
    assert result["cold_starts"] == 3  # a at 0.5 and 1.0 (loading), b at 4.0
    assert result["cold_start_rate"] == pytest.approx(0.6)
    assert result["p99_wait_s"] == 2.0
    assert result["mean_wait_s"] == pytest.approx((2.0 + 1.5 + 1.0) / 5)
    assert result["memory_gb_s"] == pytest.approx(1.0 * 9.5 + 0.5 * 6.0)
    assert result["budget_violations"] == 0
    assert [e.kind for e in read_events(events)] == ["load_start", "ready", "load_start",
                                                     "ready"]


def test_simulate_all_policies_as_a_table_and_one_events_file_each(
        files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace, models = files
    events = tmp_path / "ev.csv"
    assert simulate(["--trace", str(trace), "--models", str(models), "--budget-mb", "2000",
                     "--policy", "all", "--events-out", str(events)]) == 0
    table = capsys.readouterr().out
    for name in ("ours", "always_on", "keepalive_10m", "lru", "hybrid_histogram", "oracle"):
        assert name in table
        assert (tmp_path / f"ev.{name}.csv").is_file()
    assert simulate(["--trace", str(trace), "--models", str(models), "--budget-mb", "2000",
                     "--policy", "oracle,keepalive_10m", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["policy"] for r in results] == ["oracle", "keepalive_10m"]
    assert results[0]["cold_starts"] <= results[1]["cold_starts"]


@pytest.mark.parametrize(("trace_text", "argv", "message"), [
    ("timestamp,model\n2,a\n1,a\n", [], "trace.csv:3"),
    ("timestamp,model\n1,zz\n", [], "unknown model"),
    ("timestamp,model\n1,a\n", ["--policy", "fifo"], "unknown policy"),
    ("timestamp,model\n1,a\n", ["--policy", "all", "--param", "3"], "single --policy"),
    ("timestamp,model\n1,a\n", ["--budget-mb", "0"], "must be positive"),
])
def test_bad_input_exits_2_with_a_clear_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], trace_text: str,
        argv: list[str], message: str) -> None:
    models = tmp_path / "models.csv"
    models.write_text("model,memory_mb,load_s\na,1024,2\n")
    trace = tmp_path / "trace.csv"
    trace.write_text(trace_text)
    base = ["--trace", str(trace), "--models", str(models), "--budget-mb", "1000"]
    assert simulate(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("warmctl simulate:")
    assert message in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate(["--trace", str(tmp_path / "nope.csv"), "--models",
                     str(tmp_path / "nope2.csv"), "--budget-mb", "1"]) == 2
    assert "nope2.csv" in capsys.readouterr().err
