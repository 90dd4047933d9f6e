from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controlplane.admin.routes_plan import load_times_by_level
from controlplane.config import KeepWarmRule, SchedulerOptions
from controlplane.errors import ConfigError
from controlplane.lifecycle.states import ModelState, ModelStatus
from controlplane.scheduler.jobs import rule_active, rule_triggers
from controlplane.scheduler.profiles import ProfileBook
from controlplane.triton.repository import ModelRepository

RULE = KeepWarmRule(model="m", days="mon-fri", start="08:50", end="18:00")


@pytest.mark.parametrize(
    ("when", "active"),
    [
        (datetime(2026, 11, 23, 10, 0, tzinfo=UTC), True),  # Monday, inside
        (datetime(2026, 11, 23, 8, 49, tzinfo=UTC), False),  # Monday, before
        (datetime(2026, 11, 23, 18, 0, 30, tzinfo=UTC), False),  # Monday, just after the end
        (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2026, 11, 27, 17, 59, tzinfo=UTC), True),  # Friday, last minute
    ],
)
def test_rule_window(when: datetime, active: bool) -> None:
    assert rule_active(RULE, when) is active


def test_rule_in_another_timezone() -> None:
    rule = KeepWarmRule(model="m", days="*", start="09:00", end="10:00",
                        timezone="America/New_York")
    assert rule_active(rule, datetime(2026, 11, 23, 14, 30, tzinfo=UTC))  # 09:30 EST
    assert not rule_active(rule, datetime(2026, 11, 23, 9, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (KeepWarmRule(model="m", start="25:00", end="18:00"), "time of day"),
        (KeepWarmRule(model="m", start="08:00", end="18:00", timezone="Mars/Base"),
         "unknown timezone"),
        (KeepWarmRule(model="m", days="someday", start="08:00", end="18:00"), "rule for m"),
    ],
)
def test_bad_rules_are_config_errors(rule: KeepWarmRule, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rule_triggers(rule)


def _status(name: str, memory: int | None, load_s: float | None,
            pinned: bool = False) -> ModelStatus:
    return ModelStatus(name, "default", ModelState.COLD, None, datetime.now(UTC), pinned,
                       memory, load_s, False)


def test_profiles_prefer_measurements_and_estimate_otherwise(tmp_path: Path) -> None:
    model = tmp_path / "m"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text("instance_group [ { count: 2 kind: KIND_CPU } ]\n")
    (model / "1" / "model.pt").write_bytes(b"\0" * (10 * 2**20))
    book = ProfileBook(ModelRepository(tmp_path), SchedulerOptions(runtime_overhead_mb=200))
    book.update([_status("m", None, None)], held=set())
    estimate = book.profiles["m"]
    assert estimate.memory_mb == pytest.approx(2 * (10 + 200), rel=0.01)  # per instance
    assert estimate.load_s == 2.0 and not estimate.pinned
    assert book.measured["m"] == (False, False)
    book.update([_status("m", 300 * 2**20, 1.25)], held={"m"})
    assert (book.profiles["m"].memory_mb, book.profiles["m"].load_s) == (300, 1.25)
    assert book.profiles["m"].pinned and book.measured["m"] == (True, True)


def _event(duration: float, device: str, cache: float, outcome: str = "ok") -> Any:
    return SimpleNamespace(action="load", outcome=outcome, duration_s=duration,
                           details={"device": device, "page_cache": cache})


def test_load_times_by_level() -> None:
    events = [_event(1.0, "cpu", 1.0), _event(3.0, "cpu", 0.0), _event(1.2, "cpu", 0.9),
              _event(9.0, "gpu", 0.0), _event(0.1, "cpu", 1.0, outcome="failed")]
    assert load_times_by_level(events) == {"cpu": 1.2, "gpu": 9.0, "staged": 1.1, "cold": 6.0}
