"""What a model accepts, checked against its config at initialize (no Triton): batch bounds
of exported programs, the pieces a batch is split into, other dims, example inputs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from warmctl_plugin import checks


def test_pieces_cover_every_row_within_the_bounds() -> None:
    assert checks.Pieces(1, 1).split(3) == [(0, 1, 1), (1, 2, 1), (2, 3, 1)]
    assert checks.Pieces(1, 4).split(9) == [(0, 4, 4), (4, 8, 4), (8, 9, 1)]
    # a fixed batch of 4: the short pieces are padded up to it
    assert checks.Pieces(4, 4).split(6) == [(0, 4, 4), (4, 6, 4)]
    assert checks.Pieces(2, 8).split(1) == [(0, 1, 2)]


def test_batch_bounds_decide_pieces_and_the_warning() -> None:
    assert checks.batch_pieces([(1, 8)], 8, "m.pt2", ["ids"]) == (None, None)
    assert checks.batch_pieces([(0, None), (1, 32)], 8, "m.pt2", ["a", "b"]) == (None, None)
    pieces, warning = checks.batch_pieces([(1, 1)], 8, "model.pt2", ["ids"])
    assert pieces == checks.Pieces(1, 1)
    assert warning is not None
    assert "model.pt2 takes batches of exactly 1 row(s) but max_batch_size is 8: every forward " \
        "pass is split into pieces of at most 1 row(s); batching gains nothing." in warning
    assert "dynamic_shapes={'ids': {0: torch.export.Dim('batch', max=8)}}" in warning
    pieces, warning = checks.batch_pieces([(1, 4), (1, None)], 8, "m.pt2", ["a", "b"])
    assert pieces == checks.Pieces(1, 4)
    assert "pieces of at most 4 row(s). To batch up to 8, export" in str(warning)
    with pytest.raises(checks.CheckError, match=r"takes batches of exactly 16 row\(s\), which "
                       "max_batch_size 8 never sends: export it with dynamic_shapes"):
        checks.batch_pieces([(16, 16)], 8, "m.pt2", ["ids"])


def test_exported_bounds_and_dims_against_the_config() -> None:
    class Bag(torch.nn.Module):
        def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
            return ids.float().sum(dim=1, keepdim=True) + dense.sum(dim=1, keepdim=True)

    batch = torch.export.Dim("batch", min=1, max=4)
    example = (torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 3))
    dynamic = torch.export.export(Bag(), example, dynamic_shapes={
        "ids": {0: batch, 1: torch.export.Dim("len", min=1)}, "dense": {0: batch}})
    bounds = checks.exported_bounds(dynamic)
    assert bounds[0][0] == (1, 4) and bounds[0][1] == (1, None) and bounds[1] == [(1, 4), (3, 3)]
    config = [{"name": "ids", "dims": [-1]}, {"name": "dense", "dims": [3]}]
    assert checks.check_dims(bounds, config, True, "m.pt2") == []

    static = checks.exported_bounds(torch.export.export(Bag(), example))
    assert static == [[(2, 2), (5, 5)], [(2, 2), (3, 3)]]
    assert checks.check_dims(static, config, True, "m.pt2") == [
        "input 'ids' dim 0 is -1 in the config but m.pt2 takes only 5: other sizes will fail"]
    with pytest.raises(checks.CheckError, match=r"input 'dense' dim 0 is 4 in the config but "
                       r"m\.pt2 takes 3\.\.3"):
        checks.check_dims(static, [config[0], {"name": "dense", "dims": [4]}], True, "m.pt2")
    with pytest.raises(checks.CheckError, match=r"the config gives 2 dim\(s\) \[3, 1\] after "
                       r"the batch dim, m.pt2 takes 1"):
        checks.check_dims(static, [config[0], {"name": "dense", "dims": [3, 1]}], True,
                          "m.pt2")


def test_example_inputs_follow_the_config() -> None:
    config = [{"name": "ids", "data_type": "TYPE_INT64", "dims": [-1, 3]},
              {"name": "x", "data_type": "TYPE_FP32", "dims": [2]}]
    dtypes = {"TYPE_INT64": np.int64, "TYPE_FP32": np.float32}
    ids, x = checks.example_inputs(config, {"warmctl.input_range.ids": "1:50"}, True,
                                   dtypes, np) or []
    assert ids.shape == (1, 1, 3) and ids.dtype == np.int64 and (ids == 1).all()
    assert x.shape == (1, 2) and (x == 0).all()
    assert checks.example_inputs(config, {}, False, dtypes, np)[0].shape == (1, 3)  # type: ignore[index]
    assert checks.example_inputs([{**config[0], "reshape": {"shape": [3]}}], {}, True,
                                 dtypes, np) is None


def test_aoti_batch_bounds_come_from_the_generated_wrapper(tmp_path: Path) -> None:
    # the checks inductor writes into <package>/data/aotinductor/<model>/*.wrapper.cpp
    wrapper = '''
        ss << "input_handles[0]: unmatched dim value at 0, "
           << "expected: 1, " << "but got: " << arg3_1_size[0]
        ss << "input_handles[1]: dim value is too small at 0, "
           << "expected it to be >= 2, " << "but got: "
        ss << "input_handles[1]: dim value is too large at 0, "
           << "expected to be <= 32, " << "but got: "
        ss << "input_handles[2]: dim value is too large at 1, "
           << "expected to be <= 7, " << "but got: "
    '''
    package = tmp_path / "model.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("model/data/aotinductor/model/abc.wrapper.cpp", wrapper)
    # inductor's ">= 2" is not what the code needs (batch 1 runs correctly): not taken
    assert checks.aoti_batch_bounds(str(package)) == [(1, 1), (1, 32)]
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("model/data/aotinductor/model/abc.wrapper.so", b"")
    assert checks.aoti_batch_bounds(str(package)) == []
