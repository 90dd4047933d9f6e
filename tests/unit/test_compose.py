"""docker-compose.yml checked statically: no Docker engine runs on these machines."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from controlplane.admin.app import create_admin_app
from controlplane.cli import build_parser
from controlplane.config import load_settings
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _dockerfile(service: dict[str, Any]) -> str:
    build = service["build"]
    return (ROOT / build["context"] / build["dockerfile"]).read_text()


def test_services_and_triton_release(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"triton", "controlplane"}
    triton = _dockerfile(compose["services"]["triton"])
    # NGC 24.10 is Triton 2.51, the release of the embedded binary in nvidia-pytriton 0.7.0
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:24\.10-py3$", triton, re.M)
    assert "torch==" in triton
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "nvidia-pytriton==0.7.0" in pyproject["project"]["optional-dependencies"]["embedded"]


def test_mounted_paths_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"


def test_triton_serves_our_plugin_in_explicit_mode(compose: dict[str, Any]) -> None:
    triton = compose["services"]["triton"]
    assert "./triton_backends/torchscript:/opt/tritonserver/backends/torchscript:ro" in (
        triton["volumes"])
    entrypoint = ROOT / "docker" / "triton-entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    text = entrypoint.read_text()
    assert "--model-control-mode=explicit" in text
    assert "build_models.py" in text
    assert "v2/health/live" in " ".join(triton["healthcheck"]["test"])


def test_controlplane_command_env_ports_and_health(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cp = compose["services"]["controlplane"]
    dockerfile = _dockerfile(cp)
    entrypoint = re.search(r'^ENTRYPOINT \["(\w+)"\]', dockerfile, re.M)
    assert entrypoint is not None
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint.group(1) in scripts
    args = build_parser().parse_args(cp["command"])
    assert args.command == "serve"
    assert cp["depends_on"]["triton"]["condition"] == "service_healthy"

    for key, value in cp["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()  # the environment is valid configuration
    assert settings.triton.url == "triton:8001"
    published = {p.split("#")[0].strip() for p in cp["ports"]}
    assert f"{settings.admin.port}:{settings.admin.port}" in published
    assert f"{settings.gateway.port}:{settings.gateway.port}" in published
    assert settings.admin.host == settings.gateway.host == "0.0.0.0"

    health = " ".join(cp["healthcheck"]["test"])
    path = re.search(r"127\.0\.0\.1:(\d+)(/\w+)", health)
    assert path is not None and int(path.group(1)) == settings.admin.port
    # no control plane: the routes are all the app needs for its OpenAPI document
    bare = SimpleNamespace(settings=settings.model_copy(update={
        "admin": settings.admin.model_copy(update={"metrics": False})}))
    paths = create_admin_app(bare).openapi()["paths"]  # type: ignore[arg-type]
    assert path.group(2) in paths


def test_compose_requires_an_admin_token(compose: dict[str, Any]) -> None:
    """The admin API is published on 0.0.0.0: compose refuses to start without a token
    (``${VAR:?}``), and warmctl itself would refuse to listen there without one."""
    env = compose["services"]["controlplane"]["environment"]
    assert env["WARMCTL_ADMIN__ADMIN_TOKEN"].startswith("${WARMCTL_ADMIN_TOKEN:?")


def test_gpu_overlay_reserves_a_gpu_for_triton_only() -> None:
    overlay = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    assert set(overlay["services"]) == {"triton"}
    devices = overlay["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_compose_model_repository_mount_matches_settings(compose: dict[str, Any]) -> None:
    cp = compose["services"]["controlplane"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in cp["volumes"]}
    assert mounts[cp["environment"]["WARMCTL_MODEL_REPOSITORY"]] == "./model_repository"
    assert Path(mounts["/etc/warmctl/warmctl.toml"]).name == "warmctl.toml"


def test_triton_and_the_control_plane_share_the_compile_cache(compose: dict[str, Any]) -> None:
    triton, cp = compose["services"]["triton"], compose["services"]["controlplane"]
    path = triton["environment"]["WARMCTL_COMPILE_CACHE_DIR"]
    assert cp["environment"]["WARMCTL_COMPILE_CACHE__DIR"] == path
    for service in (triton, cp):
        assert f"compile-cache:{path}" in service["volumes"]
    assert "compile-cache" in compose["volumes"]
