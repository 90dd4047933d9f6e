"""What a client is told when a request fails in the plugin (no Triton: the pure helpers).

The TorchScript errors are real ones, raised by modules scripted, saved and loaded here, so
the test follows torch's format if it changes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from warmctl_plugin import errors


class _Ranker(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids).sum(dim=1)


class _Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 100):
            raise ValueError("sum too large")
        return x.view(-1, 7)


def _saved(module: torch.nn.Module, path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(module).save(str(path))
        loaded: torch.jit.ScriptModule = torch.jit.load(str(path))
    return loaded


def _raised(module: torch.nn.Module, x: torch.Tensor) -> Exception:
    with pytest.raises(Exception) as info:
        module(x)
    assert isinstance(info.value, Exception)
    return info.value


def test_torchscript_errors_keep_the_error_line_only(tmp_path: Path) -> None:
    ranker = _saved(_Ranker(), tmp_path / "ranker.pt")
    exc = _raised(ranker, torch.tensor([[1, 500]]))
    assert "serialized code" in str(exc) and len(str(exc)) > 1000  # what used to be sent
    assert errors.client_text(exc) == "RuntimeError: index out of range in self"

    raises = _saved(_Raises(), tmp_path / "raises.pt")
    assert errors.client_text(_raised(raises, torch.full((2, 4), 100.0))) == \
        "ValueError: sum too large"
    shape = errors.client_text(_raised(raises, torch.ones(2, 4)))
    assert shape == "RuntimeError: shape '[-1, 7]' is invalid for input of size 8"


def test_other_errors_are_type_and_message_without_paths() -> None:
    assert errors.client_text(IndexError("index out of range in self")) == \
        "IndexError: index out of range in self"
    assert errors.client_text(AssertionError("Guard failed: ids.size()[0] == 1")) == \
        "AssertionError: Guard failed: ids.size()[0] == 1"
    assert errors.client_text(KeyError()) == "KeyError"
    text = errors.client_text(FileNotFoundError(
        "cannot open /srv/models/ranker/1/weights.bin (see /var/log/x.log), not http://a/b/c"))
    assert text == ("FileNotFoundError: cannot open weights.bin (see x.log), "
                    "not http://a/b/c")


def test_texts_are_bounded_and_valid_utf8() -> None:
    long = errors.client_text(RuntimeError("head " + "x" * 5000 + " the end"))
    assert len(long) <= errors.MAX_CLIENT_CHARS
    assert long.startswith("RuntimeError: head xxx") and long.endswith("x the end")
    assert " [...] " in long
    odd = errors.client_text(RuntimeError("bad \udcd0 byte\x00 and\nnewline"))
    odd.encode("utf-8")  # raises on a lone surrogate
    assert odd == "RuntimeError: bad ? byte? and\nnewline"


def test_the_log_keeps_everything_up_to_its_own_bound() -> None:
    try:
        raise RuntimeError("boom /srv/models/secret/path.pt")
    except RuntimeError as exc:
        text = errors.log_text(exc, "request failed")
    assert text.startswith("request failed: Traceback (most recent call last):")
    assert "/srv/models/secret/path.pt" in text and "test_plugin_errors.py" in text
    assert len(errors.log_text(RuntimeError("y" * 50_000), "x")) == errors.MAX_LOG_CHARS


def test_the_log_limiter_samples_and_counts() -> None:
    now = [0.0]
    limiter = errors.LogLimiter(limit=2, window_s=10, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(5)] == [True, True, False, False, False]
    now[0] = 10.0
    assert limiter.allow()
    assert limiter.note() == "3 more not logged before this one"
    assert limiter.note() == "logged in full"
