from __future__ import annotations

import pytest

from controlplane.lifecycle.states import ModelState, state_from_index
from controlplane.triton.client import IndexEntry


def entry(state: str | None, reason: str = "", version: str | None = "1") -> IndexEntry:
    return IndexEntry("m", version, state, reason)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], (ModelState.COLD, None)),
        ([entry(None, version=None)], (ModelState.COLD, None)),
        ([entry("READY")], (ModelState.READY, None)),
        ([entry("UNAVAILABLE", "unloaded")], (ModelState.COLD, None)),
        ([entry("UNAVAILABLE", "boom")], (ModelState.FAILED, "boom")),
        ([entry("UNAVAILABLE", "unloaded"), entry("READY", version="2")],
         (ModelState.READY, None)),
        ([entry("LOADING")], (ModelState.LOADING, "loading in Triton")),
        ([entry("UNLOADING")], (ModelState.UNLOADING, "unloading in Triton")),
    ],
)
def test_index_maps_to_state(
    entries: list[IndexEntry], expected: tuple[ModelState, str | None]
) -> None:
    assert state_from_index(entries) == expected
