"""FastAPI dependencies: the running control plane and its parts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from controlplane.errors import TritonUnavailable
from controlplane.fleet.fleet import Fleet
from controlplane.lifecycle.manager import ModelManager
from controlplane.traffic.store import TrafficStore

if TYPE_CHECKING:
    from controlplane.app import ControlPlane


def control_plane(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.control_plane
    return cp


def manager(request: Request) -> ModelManager:
    found = control_plane(request).manager
    if found is None:
        raise TritonUnavailable("control plane is starting")
    return found


def fleet(request: Request) -> Fleet:
    """The fleet; 503 until its instances have started (no lifecycle to ask yet)."""
    found = control_plane(request).fleet
    if not found.managers():
        raise TritonUnavailable("control plane is starting")
    return found


def traffic(request: Request) -> TrafficStore:
    found = control_plane(request).traffic
    if found is None:
        raise TritonUnavailable("control plane is starting")
    return found


Manager = Annotated[ModelManager, Depends(manager)]
FleetDep = Annotated[Fleet, Depends(fleet)]
Traffic = Annotated[TrafficStore, Depends(traffic)]
ControlPlaneDep = Annotated["ControlPlane", Depends(control_plane)]
