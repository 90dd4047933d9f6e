from __future__ import annotations

from controlplane.policy.harness import HELD_LOAD, NEVER_REQUESTED, Harness, seeded
from controlplane.policy.types import (
    Action,
    ClusterView,
    DecisionKind,
    ModelDecision,
    ModelProfile,
    Residency,
)

MODELS = {name: ModelProfile(name, mb, 1.0, pinned=name == "pin")
          for name, mb in (("a", 400.0), ("b", 300.0), ("c", 200.0), ("pin", 100.0))}


def view(budget_mb: float = 1000.0, **residency: Residency) -> ClusterView:
    return ClusterView(50.0, budget_mb, MODELS, residency)


def decision(model: str, kind: DecisionKind) -> ModelDecision:
    return ModelDecision(model, 10.0, 1.0, 0.1, kind, 60.0 if kind == "preload" else None,
                         "policy")


def test_plans_load_only_demanded_unblocked_models_and_unloads_pass() -> None:
    harness = Harness(pinned=frozenset(), demanded={"a", "c"},
                      blocked=lambda m: ("disabled", "never loaded") if m == "c" else None)
    plan = [Action("load", "a", "x"), Action("load", "b", "x"), Action("load", "c", "x"),
            Action("unload", "b", "y")]
    assert harness.admit(plan, view()) == [Action("load", "a", "x"), Action("unload", "b", "y")]
    harness.observe("b")
    assert Action("load", "b", "x") in harness.admit(plan, view())


def test_pins_are_left_alone_until_settled_then_loaded_when_cold() -> None:
    harness = Harness(pinned=frozenset({"pin"}), held={"pin", "b"}, demanded={"pin"},
                      pins_settled=False)
    plan = [Action("load", "pin", "x"), Action("unload", "pin", "y")]
    assert harness.admit(plan, view()) == [Action("load", "b", HELD_LOAD)]
    harness.pins_settled = True
    assert harness.admit([], view(b=Residency.READY)) == [Action("load", "pin", HELD_LOAD)]


def test_more_room_evicts_least_recently_ready_beyond_the_policy() -> None:
    harness = seeded(["pin"])
    # 400 + 300 + 100 resident, 200 more asked, budget 800: 200 MB to free. The policy's own
    # unload of b (300) suffices; without it, a (ready earliest) goes before b.
    v = view(800.0, a=Residency.READY, b=Residency.READY, pin=Residency.READY)
    ready_since = {"a": 10.0, "b": 20.0, "pin": 0.0}
    assert harness.more_room("c", v, [Action("unload", "b", "p")], ready_since) == ([], 0.0)
    extra, over = harness.more_room("c", v, [], ready_since)
    assert extra == [Action("unload", "a", "make room for c (budget)")] and over == 0.0


def test_more_room_reports_what_loading_and_held_models_keep_over_budget() -> None:
    harness = seeded(["pin"])
    v = view(500.0, a=Residency.LOADING, pin=Residency.READY, b=Residency.READY)
    extra, over = harness.more_room("c", v, [], {"pin": 0.0, "b": 5.0})
    assert extra == [Action("unload", "b", "make room for c (budget)")]
    assert over == 400.0 + 100.0 + 200.0 - 500.0


def test_explain_rewrites_never_requested_preloads_blocks_and_notes() -> None:
    harness = Harness(pinned=frozenset(), demanded={"a", "c"},
                      blocked=lambda m: ("held cold", "operator") if m == "c" else None)
    out = harness.explain([decision("a", "preload"), decision("b", "preload"),
                           decision("c", "keep")], notes={"a": "on the CPU", "c": "ignored"})
    assert [(d.model, d.decision, d.preload_at, d.why) for d in out] == [
        ("a", "preload", 60.0, "policy; on the CPU"),
        ("b", "lazy", None, NEVER_REQUESTED),
        ("c", "held cold", None, "operator")]
