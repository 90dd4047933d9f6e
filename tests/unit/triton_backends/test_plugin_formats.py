"""Which file and format the plugin serves from a version folder (no Triton, no model load)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from warmctl_plugin import formats


def pt2(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


EXPORTED = {"model/models/model.json": b"{}", "model/archive_format": b"pt2"}
AOTI = {"model/data/aotinductor/model/x.wrapper.so": b"",
        "model/data/aotinductor/model/x.wrapper_metadata.json": json.dumps(
            {"AOTI_DEVICE_KEY": "cpu", "AOTI_CPU_ISA": "AVX512"}).encode()}


def test_the_files_decide_the_format(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"ts")
    assert formats.locate(str(tmp_path), {}) == (str(tmp_path / "model.pt"), "torchscript")
    # a .pt2 beside a working model.pt does not change what is served
    pt2(tmp_path / "model.pt2", EXPORTED)
    assert formats.locate(str(tmp_path), {})[1] == "torchscript"
    (tmp_path / "model.pt").unlink()
    assert formats.locate(str(tmp_path), {}) == (str(tmp_path / "model.pt2"), "exported_program")
    pt2(tmp_path / "model.pt2", AOTI)
    assert formats.locate(str(tmp_path), {})[1] == "aoti"


def test_parameters_override_and_are_checked(tmp_path: Path) -> None:
    pt2(tmp_path / "ranker.pt2", EXPORTED)
    assert formats.locate(str(tmp_path), {"model_file": "ranker.pt2"})[1] == "exported_program"
    assert formats.locate(str(tmp_path), {"model_file": "ranker.pt2", "model_format": "aoti"}
                          )[1] == "aoti"
    with pytest.raises(formats.FormatError, match="model_format='onnx': expected one of"):
        formats.locate(str(tmp_path), {"model_format": "onnx"})
    with pytest.raises(formats.FormatError, match=r"no model file in .*model.pt or model.pt2"):
        formats.locate(str(tmp_path / "empty"), {})
    with pytest.raises(formats.FormatError, match="model file not found"):
        formats.locate(str(tmp_path), {"model_file": "missing.pt2"})


def test_an_unknown_archive_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "model.pt2").write_bytes(b"not a zip")
    with pytest.raises(formats.FormatError, match=r"is not a \.pt2 archive"):
        formats.locate(str(tmp_path), {})
    pt2(tmp_path / "model.pt2", {"x/readme.txt": b""})
    with pytest.raises(formats.FormatError, match="neither an ExportedProgram"):
        formats.locate(str(tmp_path), {})


def test_an_aoti_package_for_another_device_or_cpu_is_refused(tmp_path: Path) -> None:
    path = str(pt2(tmp_path / "model.pt2", AOTI))
    meta = formats.aoti_target(path)
    assert meta["AOTI_DEVICE_KEY"] == "cpu"
    avx2 = SimpleNamespace(backends=SimpleNamespace(cpu=SimpleNamespace(
        get_cpu_capability=lambda: "AVX2")))
    with pytest.raises(formats.FormatError, match="for cpu but this instance runs on cuda"):
        formats._check_aoti_target(path, meta, SimpleNamespace(type="cuda"), avx2)
    with pytest.raises(formats.FormatError, match="compiled for AVX512 CPUs; this CPU has AVX2"):
        formats._check_aoti_target(path, meta, SimpleNamespace(type="cpu"), avx2)
