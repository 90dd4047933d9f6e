"""Which version of a model a request goes to while a new one is rolled out.

A request that names a version gets it. One that names none gets, during a rollout, the
target version with probability ``share`` and the active one otherwise -- always named in
the request forwarded, so that Triton (serving both versions, which would otherwise answer an
unversioned request with the highest) never sends a client to an unverified version. Outside
a rollout requests are forwarded as they came (the model's pinned version serves them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionSplit:
    """A model's traffic between its ``active`` and ``target`` versions (Triton's version
    folder names); ``share``: the target's part, 0..1."""

    active: str
    target: str
    share: float

    def pick(self, draw: float) -> str:
        """The version for one request, given a uniform draw in [0, 1)."""
        return self.target if draw < self.share else self.active


def choose(split: VersionSplit | None, requested: str,
           rng: random.Random = random._inst) -> str | None:
    """The version to name in the forwarded request; None: forward it as it came."""
    if requested or split is None:
        return None
    return split.pick(rng.random())
