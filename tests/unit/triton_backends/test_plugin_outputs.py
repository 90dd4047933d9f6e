"""From a model's return value to the config's outputs (no Triton)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from warmctl_plugin import outputs

NAMES = ["score", "embedding", "logits"]
A, B, C = torch.zeros(2, 1), torch.ones(2, 4), torch.full((2, 3), 2.0)


def flat(out: object, names: list[str] = NAMES) -> list[torch.Tensor]:
    return outputs.flatten(out, names, torch.Tensor)


def test_every_form_maps_in_config_order() -> None:
    assert flat(A, ["score"]) == [A]
    for form in ((A, B, C), [A, B, C], (A, [B, (C,)]), [[A], [B, C]]):
        assert [t is want for t, want in zip(flat(form), (A, B, C), strict=True)] == \
            [True] * 3, form
    named = namedtuple("named", "x y z")(A, B, C)
    assert flat(named)[2] is C
    # a dict maps by name, whatever its order; keys the config does not declare are ignored
    by_name = flat({"logits": C, "debug": "not served", "score": A, "embedding": B})
    assert [t is want for t, want in zip(by_name, (A, B, C), strict=True)] == [True] * 3


def test_mismatches_say_what_came_back() -> None:
    with pytest.raises(outputs.OutputError, match=r"returned 2 value\(s\) \(tuple\(tensor\[2, "
                       r"1\], tensor\[2, 4\]\)\); the config declares 3 output\(s\): score"):
        flat((A, B))
    with pytest.raises(outputs.OutputError, match=r"keys 'score', 'extra'; the config's "
                       r"output\(s\) 'embedding', 'logits' are not among them"):
        flat({"score": A, "extra": B})
    with pytest.raises(outputs.OutputError,
                       match=r"'embedding' \(config output 'embedding'\) is a str, not a tensor"):
        flat({"score": A, "embedding": "text", "logits": C})
    with pytest.raises(outputs.OutputError,
                       match=r"output\[1\]\[0\] \(config output 'embedding'\) is a NoneType"):
        flat((A, [None, C]))
    with pytest.raises(outputs.OutputError, match="a dict inside a tuple or list"):
        flat((A, {"embedding": B}, C))
    with pytest.raises(outputs.OutputError, match=r"returned 1 value\(s\) \(int\)"):
        flat(3)


def test_rows_must_be_the_batch() -> None:
    outputs.check_rows([np.zeros((3, 1)), np.zeros((3, 4, 2))], ["a", "b"], 3)
    with pytest.raises(outputs.OutputError, match=r"'b' has shape \[1, 4\] for a batch of 3"):
        outputs.check_rows([np.zeros((3, 1)), np.zeros((1, 4))], ["a", "b"], 3)
    with pytest.raises(outputs.OutputError, match=r"'a' has shape \[\] for a batch of 2"):
        outputs.check_rows([np.float32(1.0)], ["a"], 2)
