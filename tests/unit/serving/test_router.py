"""Router weights: equal weights balance on requests in flight, unequal ones split traffic
in proportion, weight 0 takes none."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from controlplane.serving.router import Router


@dataclass(eq=False)
class R:
    name: str
    outstanding: int = 0
    cordoned: bool = False
    weights: dict[str, float] = field(default_factory=dict)

    def serves(self, model: str) -> bool:
        return True

    def weight(self, model: str) -> float:
        return self.weights.get(model, 1.0)


def test_unequal_weights_split_requests_in_proportion_whatever_is_in_flight() -> None:
    main, canary = R("main", outstanding=5), R("canary", weights={"m": 0.05})
    router = Router(lambda: [main, canary], rng=random.Random(7))
    picks = Counter(router.pick("m").name for _ in range(20_000))  # type: ignore[union-attr]
    # 0.05 / 1.05 of the requests, though the canary has nothing in flight
    assert 0.040 < picks["canary"] / 20_000 < 0.056
    canary.weights["m"] = 0.0
    assert {router.pick("m").name for _ in range(200)} == {"main"}  # type: ignore[union-attr]
    assert [r.name for r in router.candidates("m")] == ["main"]


def test_equal_weights_go_to_the_replica_with_fewer_in_flight() -> None:
    busy, idle = R("busy", outstanding=3), R("idle")
    router = Router(lambda: [busy, idle], rng=random.Random(1))
    assert {router.pick("m").name for _ in range(100)} == {"idle"}  # type: ignore[union-attr]
