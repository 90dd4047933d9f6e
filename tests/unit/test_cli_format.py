"""The CLI's status table, progress line, ``--version`` and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from controlplane import __version__
from controlplane.cli import build_parser
from controlplane.cli_format import fit, progress, status_table
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
