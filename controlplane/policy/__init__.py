"""Residency policies: which models to keep loaded, preload, or drop under a memory budget.

The same policy objects run live (driven by the scheduler with wall-clock time) and in the trace
simulator; they are pure, synchronous and take time as an argument. Start with
:func:`make_policy` and :data:`POLICY_SPECS`; the live driver needs only the names re-exported
here.
"""

from controlplane.policy.planner import ForecastPlanner
from controlplane.policy.registry import POLICY_NAMES, POLICY_SPECS, make_policy, policy_spec
from controlplane.policy.types import (
    Action,
    ClusterView,
    ModelDecision,
    ModelProfile,
    Policy,
    PolicySpec,
    Residency,
)

__all__ = [
    "POLICY_NAMES",
    "POLICY_SPECS",
    "Action",
    "ClusterView",
    "ForecastPlanner",
    "ModelDecision",
    "ModelProfile",
    "Policy",
    "PolicySpec",
    "Residency",
    "make_policy",
    "policy_spec",
]
