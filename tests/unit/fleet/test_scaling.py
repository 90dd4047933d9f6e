"""The live autoscaler's snapshot and actions, on a fleet of real managers over fake Tritons
(``support.py``) with a membership fake that records what it is asked: decisions come from
the real :class:`~controlplane.policy.autoscale.Autoscaler` on a fake clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from controlplane.config import InstanceSettings, load_settings
from controlplane.fleet.fleet import Fleet
from controlplane.fleet.kubernetes import KubernetesProvider
from controlplane.fleet.load_watch import LoadWatch
from controlplane.fleet.runtime import InstanceRuntime
from controlplane.fleet.scaling import LiveAutoscaler
from controlplane.fleet.states import InstanceState
from controlplane.store.database import Database
from controlplane.traffic.observation import Observation
from tests.unit.fleet.support import make_fleet


class FakeMembership:
    """What the autoscaler asks of the membership, recorded; adds become instances at once
    when ``join`` is set (a fleet with a standby to promote)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.joining: dict[str, InstanceRuntime] = {}
        self.leaving: set[str] = set()
        self.warm_up_s: deque[float] = deque([4.0, 6.0, 5.0])
        self.calls: list[tuple[str, str, bool]] = []
        self.providers: dict[str, object] = {}

    async def add(self, name: str, spec: InstanceSettings, *, origin: str,
                  standby: bool = False) -> InstanceRuntime:
        self.calls.append(("add", name, standby))
        rt = InstanceRuntime(name, spec, cast(Any, None), cast(Any, None), origin=origin)
        self.joining[name] = rt
        return rt

    def promote(self, name: str, why: str) -> InstanceRuntime:
        self.calls.append(("promote", name, False))
        rt = self.fleet.runtime(name)
        rt.move(InstanceState.SERVING, why)
        return rt

    def remove(self, name: str, why: str, *, force: bool = False) -> InstanceRuntime:
        self.calls.append(("remove", name, False))
        self.leaving.add(name)
        return self.fleet.runtime(name)

    def standby_target(self, name: str) -> bool:
        return any(c == ("add", name, True) for c in self.calls)


def _make(fleet: Fleet, tmp_path: Path, now: list[float], **autoscaler: Any
          ) -> tuple[LiveAutoscaler, FakeMembership, LoadWatch]:
    settings = load_settings(
        data_dir=tmp_path / "s", model_repository=tmp_path / "repo",
        fleet={"replica_rate_per_s": 2.0, "measured_rate_window_s": 10},
        autoscaler={"enabled": True, "min_instances": 1, "max_instances": 4,
                    "interval_s": 1, "scale_out_cooldown_s": 30,
                    "scale_in_cooldown_s": 60, "lead_margin_s": 10, **autoscaler})
    membership = FakeMembership(fleet)
    load = LoadWatch(10, clock=lambda: now[0])
    scaler = LiveAutoscaler(fleet, cast(Any, membership), settings, load,
                            clock=lambda: now[0])
    return scaler, membership, load


def _burst(load: LoadWatch, model: str, at: float, per_s: int, seconds: int) -> None:
    for k in range(seconds * per_s):
        t = at - seconds + k / per_s
        load.observation(Observation(model, "", (), t, 0.01, "OK", False, None))


async def test_a_burst_scales_out_and_the_reason_names_the_model(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a",))
    now = [10_000.0]
    scaler, membership, load = _make(fleet, tmp_path, now)
    first = await scaler.step()
    assert first.action == "none" and membership.calls == []
    _burst(load, "hot", now[0], per_s=7, seconds=10)  # 7/s: 4 replicas at 2/s each
    decision = await scaler.step()
    assert decision.action == "scale_out" and decision.count == 3
    assert membership.calls == [("add", "auto-1", False), ("add", "auto-2", False),
                                ("add", "auto-3", False)]
    assert any("hot" in r and "measured" in r for r in decision.reasons), decision.reasons
    assert scaler.view()["decisions"][0]["instances"] == ["auto-1", "auto-2", "auto-3"]
    assert [a.kind for a in fleet.actions] == ["scale out"] * 3
    # the joining instances count: no second scale-out for the same burst
    now[0] += 1
    _burst(load, "hot", now[0], per_s=7, seconds=1)
    again = await scaler.step()
    assert again.action == "none", again.reasons


async def test_a_standby_is_kept_promoted_on_a_failure_and_the_warm_up_is_the_p90(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "s"))
    spare = fleet.runtimes["s"]
    spare.origin = "autoscaler"
    spare.phase = InstanceState.STANDBY
    now = [10_000.0]
    scaler, membership, _ = _make(fleet, tmp_path, now, standby=1)
    assert scaler.warm_up_s() == 6.0
    decision = await scaler.step()
    assert decision.standby_wanted == 1 and membership.calls == []  # one is there
    scaler.on_down("a", "tritonserver was killed by signal 9")
    assert spare.state is InstanceState.SERVING
    assert membership.calls == [("promote", "s", False)]
    assert scaler.events[-1].decision.action == "promote_standby"
    # the next pass replaces the used standby
    await scaler.step()
    assert ("add", "auto-1", True) in membership.calls


async def test_scale_in_retires_only_its_own_idle_instances(
        tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a", "b", "c"))
    fleet.runtimes["c"].origin = "autoscaler"
    now = [10_000.0]
    scaler, membership, _ = _make(fleet, tmp_path, now, scale_in_cooldown_s=0)
    decision = await scaler.step()
    assert decision.action == "scale_in", decision.reasons
    assert membership.calls == [("remove", "c", False)]
    # nothing more of its own to retire: a and b are the settings'
    membership.leaving.add("c")
    fleet.runtimes["c"].phase = InstanceState.DRAINING
    now[0] += 1
    decision = await scaler.step()
    assert [c for c in membership.calls if c[0] == "remove"] == [("remove", "c", False)]
    if decision.action == "scale_in":
        assert "no serving instance is the autoscaler's" in scaler.events[-1].outcome


async def test_the_forecast_is_read_over_the_lead(tmp_path: Path, database: Database) -> None:
    fleet = await make_fleet(tmp_path, database, ("a",))
    fleet.rates = {"hot": 0.5}
    now = [10_000.0]
    asked: list[tuple[float, float]] = []

    async def forecast(models: Sequence[str], at: float, horizon: float
                       ) -> dict[str, float | None]:
        asked.append((at, horizon))
        return {m: 5.0 if m == "hot" else None for m in models}

    scaler, _membership, _ = _make(fleet, tmp_path, now)
    scaler.forecast = forecast
    snap = await scaler.snapshot()
    assert asked == [(now[0], 6.0 + 10)]  # measured warm-up p90 + lead_margin_s
    hot = next(m for m in snap.models if m.model == "hot")
    assert hot.forecast_rate_per_s == 0.5 and hot.forecast_ahead_per_s == 5.0
    assert snap.serving == 1 and snap.warming == 0


async def test_on_kubernetes_it_scales_the_workload_and_marks_the_pod_it_drains(
        tmp_path: Path, database: Database) -> None:
    """Against the fake Kubernetes API server (``tests/support/fake_kubernetes.py``: no API
    server runs on these machines, so it is faked at its REST protocol)."""
    from tests.support.fake_kubernetes import FakeKubernetes

    fake = FakeKubernetes(namespace="serving")
    await fake.start()
    fleet = await make_fleet(tmp_path, database, ("pod-a", "pod-b"))
    for rt in fleet.order:
        rt.origin = "kubernetes"
    fake.add_pod("pod-a", "10.0.0.1", ready=True)
    fake.add_pod("pod-b", "10.0.0.2", ready=True)
    now = [10_000.0]
    scaler, membership, load = _make(fleet, tmp_path, now, provider="kubernetes",
                                     scale_in_cooldown_s=0)
    settings = load_settings(data_dir=tmp_path / "k", kubernetes={
        "enabled": True, "namespace": "serving",
        "kubeconfig": fake.kubeconfig(tmp_path / "kubeconfig"), "request_timeout_s": 2})
    k8s = KubernetesProvider(settings)
    membership.providers = {"kubernetes": k8s}
    scaler.settings = scaler.settings.model_copy(update={"kubernetes": settings.kubernetes})
    try:
        await k8s.discover()  # the provider learns the pods' names
        fake.scales[("deployments", "triton")] = 2
        _burst(load, "hot", now[0], per_s=7, seconds=10)  # 4 replicas wanted
        decision = await scaler.step()
        assert decision.action == "scale_out" and decision.count == 2
        assert fake.scales[("deployments", "triton")] == 4
        assert membership.calls == []  # the pods join through the watch
        assert scaler.events[-1].instances == ["triton=4"]
        # the burst is over: one instance retired, drained first, its pod marked
        fake.scales[("deployments", "triton")] = 2
        now[0] += 100
        decision = await scaler.step()
        assert decision.action == "scale_in", decision.reasons
        (drained,) = [c[1] for c in membership.calls if c[0] == "remove"]
        annotations = fake.pods[drained]["metadata"].get("annotations", {})
        assert annotations == {"controller.kubernetes.io/pod-deletion-cost": "-1000000"}
        assert fake.scales[("deployments", "triton")] == 1
    finally:
        await k8s.close()
        await fake.stop()
