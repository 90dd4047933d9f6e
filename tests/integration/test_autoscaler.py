"""The autoscaler and the ramp on real embedded tritonservers (issue 18).

* A standby instance is kept warm outside routing; when the serving instance's Triton is
  SIGKILLed under load, the standby takes the traffic at once -- no request waits for a load
  -- and a new standby replaces it.
* A forecast peak ahead (the forecast injected: a compressed day cannot teach the planner's
  hourly profile) scales out before the peak's traffic comes, pre-warmed, and ``GET
  /scaling`` says why.
* A burst on one model gets a second replica within a minute (the measured rate, not the
  day-long forecast), and the new replica's share of the traffic ramps up: visible in the
  per-instance request counts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.app import ControlPlane
from controlplane.config import InstanceSettings, Settings, load_settings
from controlplane.fleet.states import InstanceState
from controlplane.traffic.observation import Observation
from tests.conftest import ROOT
from tests.support.load import ClientLoops
from tests.support.repository import add_identity
from tests.support.waiting import until

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


def _settings(tmp: Path, **overrides: Any) -> Settings:
    repo = tmp / "repository"
    add_identity(repo, "hot")
    add_identity(repo, "cold")
    base: dict[str, Any] = dict(
        data_dir=tmp / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0},
        triton={"stop_timeout_s": 5, "load_timeout_s": 60,
                "supervision": {"restart_delay_s": 20}},
        models={"hot": {"pinned": True}})
    return load_settings(**{**base, **overrides})


class Load(ClientLoops):
    """Client loops through ``cp``'s gateway, and every observation its recorder makes."""

    def __init__(self, cp: ControlPlane, model: str, clients: int = 3,
                 pause_s: float = 0.005) -> None:
        super().__init__(cp, model, n=clients, pause_s=pause_s)
        self.observed: list[Observation] = []
        assert cp.recorder is not None
        cp.recorder.on_observation.append(self.observed.append)

    def waited(self) -> list[Observation]:
        """Requests that found their model not ready and were served after waiting for a
        load (a request refused at once, while no replica could take it, waited for none:
        the recorder marks it cold too, and the failures are counted apart)."""
        return [o for o in self.observed if o.cold and o.outcome == "OK"]


def _states(cp: ControlPlane) -> dict[str, str]:
    return {rt.name: rt.state.value for rt in cp.fleet.order}


async def test_a_standby_takes_over_a_killed_instance_with_no_load_on_the_request_path(
        tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, scheduler={"enabled": False}, instances={"a": InstanceSettings()},
        # one replica carries the test's load: only the failure promotes the standby
        fleet={"replica_rate_per_s": 10_000},
        autoscaler={"enabled": True, "min_instances": 1, "max_instances": 3, "standby": 1,
                    "interval_s": 0.5, "scale_in_cooldown_s": 600})
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    try:
        # the standby is started and warm with the pinned model, outside routing
        assert await until(lambda: "standby" in _states(cp).values(), 90), _states(cp)
        standby = next(rt for rt in cp.fleet.order if rt.state is InstanceState.STANDBY)
        assert standby.origin == "autoscaler" and standby.manager is not None
        assert standby.manager.ready_now("hot")
        load = Load(cp, "hot").start()
        await asyncio.sleep(1.0)
        assert standby.upstream is not None and standby.upstream.requests == 0
        a = cp.fleet.runtimes["a"]
        assert a.instance is not None and a.instance.process is not None
        kill_at = time.monotonic()
        os.kill(a.instance.process.pid or 0, signal.SIGKILL)
        assert await until(lambda: standby.state is InstanceState.SERVING, 10)
        promoted_after = time.monotonic() - kill_at
        await asyncio.sleep(2.0)
        failures = await load.finish()
        # only requests in flight on the killed process may fail (3 clients)
        assert len(failures) <= 3, failures
        assert standby.upstream.requests > 50
        assert load.waited() == [], load.waited()[:3]  # no load on the request path
        assert promoted_after < 5
        # the used standby is replaced by a new one
        assert await until(lambda: sum(
            1 for rt in cp.fleet.order if rt.state is InstanceState.STANDBY) == 1, 90)
        async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
            scaling = (await http.get("/scaling")).json()
        promoted = [d for d in scaling["decisions"] if d["action"] == "promote_standby"]
        assert promoted and promoted[0]["instances"] == [standby.name]
        assert "a stopped serving" in promoted[0]["reasons"][0]
    finally:
        await cp.stop()


async def test_scale_out_comes_before_a_forecast_peak_and_says_why(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, scheduler={"enabled": False}, instances={"a": InstanceSettings()},
        fleet={"replica_rate_per_s": 5, "pinned_replicas": 2, "ramp_s": 0},
        autoscaler={"enabled": True, "min_instances": 1, "max_instances": 2,
                    "interval_s": 0.5, "lead_margin_s": 10, "default_warm_up_s": 5})
    cp = ControlPlane(settings)
    peak_at = time.time() + 3600.0  # far ahead: nothing is due yet

    async def forecast(models: Sequence[str], now: float, horizon_s: float
                       ) -> dict[str, float | None]:
        # 12 requests/s for "hot" from peak_at on (a diurnal morning, compressed)
        return {m: (12.0 if m == "hot" and now + horizon_s >= peak_at else 0.1)
                for m in models}

    cp.autoscaler.forecast = forecast
    await cp.start(wait_pinned=True)
    try:
        await asyncio.sleep(2.0)
        assert list(cp.fleet.runtimes) == ["a"]  # the peak is an hour away: no scale-out
        peak_at = time.time() + 12.0  # now the peak is 12 s ahead: within the 15 s lead
        assert await until(lambda: len(cp.fleet.order) == 2, 10), _states(cp)
        decided = time.time()
        assert decided < peak_at
        new = cp.fleet.order[1]
        assert new.origin == "autoscaler"
        assert await until(lambda: new.state is InstanceState.SERVING, 60)
        assert new.manager is not None and new.manager.ready_now("hot")
        # the peak's traffic finds both replicas warm
        await asyncio.sleep(max(0.0, peak_at - time.time()))
        load = Load(cp, "hot", clients=4).start()
        await asyncio.sleep(2.0)
        failures = await load.finish()
        assert failures == [] and load.waited() == []
        assert new.upstream is not None and new.upstream.requests > 20
        async with httpx.AsyncClient(base_url=cp.admin_url, timeout=30) as http:
            scaling = (await http.get("/scaling")).json()
        out = [d for d in scaling["decisions"] if d["action"] == "scale_out"]
        assert out and out[-1]["instances"] == [new.name]
        why = " ".join(out[-1]["reasons"])
        assert "hot" in why and "forecast" in why, why
        assert scaling["warm_up_s"] is not None and scaling["lead_s"] > 0
    finally:
        await cp.stop()


async def test_a_burst_gets_a_second_replica_within_a_minute_and_it_ramps_up(
        tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, instances={"a": InstanceSettings(), "b": InstanceSettings()},
        models={}, scheduler={"enabled": True},
        fleet={"replica_rate_per_s": 2, "ramp_s": 8, "ramp_start_weight": 0.05,
               "measured_rate_window_s": 10})
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    try:
        load = Load(cp, "cold", clients=3, pause_s=0.02).start()
        began = time.monotonic()

        def ready_on() -> list[str]:
            return [rt.name for rt in cp.fleet.order
                    if rt.manager is not None and rt.manager.ready_now("cold")]

        assert await until(lambda: len(ready_on()) == 2, 60), ready_on()
        second_after = time.monotonic() - began
        first = next(n for n in ready_on() if cp.fleet.runtimes[n].weight("cold") == 1.0)
        new = next(n for n in ready_on() if n != first)
        counts = {n: cp.fleet.runtimes[n].upstream.requests  # type: ignore[union-attr]
                  for n in ("a", "b")}
        await asyncio.sleep(2.0)
        early = {n: cp.fleet.runtimes[n].upstream.requests - counts[n]  # type: ignore[union-attr]
                 for n in counts}
        await until(lambda: "cold" not in cp.fleet.runtimes[new].weights, 15)
        counts = {n: cp.fleet.runtimes[n].upstream.requests  # type: ignore[union-attr]
                  for n in ("a", "b")}
        await asyncio.sleep(3.0)
        late = {n: cp.fleet.runtimes[n].upstream.requests - counts[n]  # type: ignore[union-attr]
                for n in counts}
        failures = await load.finish()
        assert failures == []
        assert second_after < 60
        early_share = early[new] / max(1, sum(early.values()))
        late_share = late[new] / max(1, sum(late.values()))
        # ramping: a small share first, then its full (equal) share
        assert early_share < 0.3 < late_share, (early, late)
        actions = [a for a in cp.fleet.actions if a.kind == "add replica" and a.model == "cold"]
        assert actions and actions[-1].instance == new
    finally:
        await cp.stop()
