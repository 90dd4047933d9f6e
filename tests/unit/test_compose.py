"""docker-compose.yml checked statically: no Docker engine (nor `docker compose`) runs on these
machines. Two Triton services under one control plane that knows them as static instances."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from controlplane.admin.app import create_admin_app
from controlplane.cli import build_parser
from controlplane.config import Settings, load_settings
from tests.conftest import ROOT

TRITONS = ("triton-a", "triton-b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture
def settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The control plane's settings as in its container: its environment and the mounted file."""
    cp = compose["services"]["controlplane"]
    for key in list(os.environ):
        if key.startswith("WARMCTL_"):
            monkeypatch.delenv(key)
    for key, value in cp["environment"].items():
        monkeypatch.setenv(key, str(value))
    mounts = {v.split(":")[1]: v.split(":")[0] for v in cp["volumes"]}
    config = build_parser().parse_args(cp["command"]).config
    return load_settings(ROOT / mounts[str(config)])  # valid configuration, both together


def _dockerfile(service: dict[str, Any]) -> str:
    build = service["build"]
    return (ROOT / str(build["context"]) / str(build["dockerfile"])).read_text()


def _container_ports(service: dict[str, Any]) -> set[int]:
    """Ports other services reach: ``expose`` and the container side of ``ports``."""
    published = {p.split("#")[0].strip().rsplit(":", 1)[-1] for p in service.get("ports", [])}
    return {int(p) for p in {*map(str, service.get("expose", [])), *published}}


def test_services_and_triton_release(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*TRITONS, "controlplane"}
    a, b = (compose["services"][name] for name in TRITONS)
    # one image: the same build, so both run the same Triton with the same plugin
    assert a["image"] == b["image"] and a["build"] == b["build"]
    triton = _dockerfile(a)
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


@pytest.mark.parametrize("name", TRITONS)
def test_triton_serves_our_plugin_in_explicit_mode(compose: dict[str, Any], name: str) -> None:
    triton = compose["services"][name]
    assert "./triton_backends/torchscript:/opt/tritonserver/backends/torchscript:ro" in (
        triton["volumes"])
    entrypoint = ROOT / "docker" / "triton-entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    text = entrypoint.read_text()
    assert "--model-control-mode=explicit" in text
    # both Tritons start on one repository: the example weights are built under a lock
    assert re.search(r"^\s*flock /models python3 /models/build_models\.py", text, re.M)
    assert "v2/health/live" in " ".join(triton["healthcheck"]["test"])
    assert 8000 in _container_ports(triton)  # the port the health check asks


def test_the_tritons_share_repository_and_volumes(compose: dict[str, Any]) -> None:
    a, b = (compose["services"][name] for name in TRITONS)
    assert a["volumes"] == b["volumes"] and a["environment"] == b["environment"]
    assert "./model_repository:/models" in a["volumes"]
    # metrics are published for scraping, each Triton on its own host port
    hosts = [p.split(":")[0] for name in TRITONS for p in compose["services"][name]["ports"]]
    assert len(hosts) == len(set(hosts)) == len(TRITONS)


def test_controlplane_command_env_ports_and_health(
    compose: dict[str, Any], settings: Settings
) -> None:
    cp = compose["services"]["controlplane"]
    dockerfile = _dockerfile(cp)
    entrypoint = re.search(r'^ENTRYPOINT \["(\w+)"\]', dockerfile, re.M)
    assert entrypoint is not None
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint.group(1) in scripts
    args = build_parser().parse_args(cp["command"])
    assert args.command == "serve"
    for name in TRITONS:
        assert cp["depends_on"][name]["condition"] == "service_healthy"

    published = {p.split("#")[0].strip() for p in cp["ports"]}
    assert f"{settings.admin.port}:{settings.admin.port}" in published
    assert f"{settings.gateway.port}:{settings.gateway.port}" in published
    assert settings.admin.host == settings.gateway.host == "0.0.0.0"

    health = " ".join(cp["healthcheck"]["test"])
    path = re.search(r"127\.0\.0\.1:(\d+)(/\w+)", health)
    assert path is not None and int(path.group(1)) == settings.admin.port
    # no control plane: the routes are all the app needs for its OpenAPI document
    bare = SimpleNamespace(settings=settings.model_copy(update={
        "admin": settings.admin.model_copy(update={"metrics": False})}), cluster=None)
    paths = create_admin_app(bare).openapi()["paths"]  # type: ignore[arg-type]
    assert path.group(2) in paths


def test_the_environment_builds_two_static_instances(settings: Settings) -> None:
    # env keys are lower-cased: the instance names use "_" where the services use "-"
    instances = settings.fleet_instances()
    assert list(instances) == ["triton_a", "triton_b"]
    for name, instance in instances.items():
        service = name.replace("_", "-")
        assert instance.provider == "static"
        assert instance.url == f"{service}:8001"
        assert instance.metrics_url == f"http://{service}:8002/metrics"
    assert settings.triton.url is None  # no single-instance address left to contradict them


def test_instance_urls_name_compose_services_and_their_ports(
    compose: dict[str, Any], settings: Settings
) -> None:
    services = compose["services"]
    cp = services["controlplane"]
    reached: set[str] = set()
    for name, instance in settings.fleet_instances().items():
        assert instance.url is not None and instance.metrics_url is not None
        host, port = instance.url.rsplit(":", 1)
        metrics = urlsplit(instance.metrics_url)
        assert metrics.hostname == host, name
        assert host in services, f"{name}: {host} is not a compose service"
        target = services[host]
        assert {int(port), metrics.port} <= _container_ports(target), name
        assert "healthcheck" in target, name
        assert cp["depends_on"][host]["condition"] == "service_healthy", name
        reached.add(host)
    assert reached == set(TRITONS)  # every Triton is an instance of the control plane


def test_compose_requires_an_admin_token(compose: dict[str, Any]) -> None:
    """The admin API is published on 0.0.0.0: compose refuses to start without a token
    (``${VAR:?}``), and warmctl itself would refuse to listen there without one."""
    env = compose["services"]["controlplane"]["environment"]
    assert env["WARMCTL_ADMIN__ADMIN_TOKEN"].startswith("${WARMCTL_ADMIN_TOKEN:?")


def test_gpu_overlay_gives_each_triton_its_own_gpu() -> None:
    overlay = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    assert set(overlay["services"]) == set(TRITONS)
    seen: list[str] = []
    for name in TRITONS:
        devices = overlay["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and devices[0]["capabilities"] == ["gpu"], name
        assert "count" not in devices[0], name  # a count could hand both Tritons GPU 0
        seen += devices[0]["device_ids"]
    assert len(seen) == len(set(seen)) == len(TRITONS)


def test_compose_model_repository_mount_matches_settings(compose: dict[str, Any]) -> None:
    cp = compose["services"]["controlplane"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in cp["volumes"]}
    assert mounts[cp["environment"]["WARMCTL_MODEL_REPOSITORY"]] == "./model_repository"
    assert Path(mounts["/etc/warmctl/warmctl.toml"]).name == "warmctl.toml"
    for name in TRITONS:  # the control plane reads the repository the Tritons load from
        triton = {v.split(":")[1]: v.split(":")[0] for v in compose["services"][name]["volumes"]}
        assert triton["/models"] == "./model_repository", name


def test_tritons_and_the_control_plane_share_the_compile_cache(compose: dict[str, Any]) -> None:
    cp = compose["services"]["controlplane"]
    path = cp["environment"]["WARMCTL_COMPILE_CACHE__DIR"]
    for name in TRITONS:
        triton = compose["services"][name]
        assert triton["environment"]["WARMCTL_COMPILE_CACHE_DIR"] == path
        assert f"compile-cache:{path}" in triton["volumes"]
    assert f"compile-cache:{path}" in cp["volumes"]
    assert "compile-cache" in compose["volumes"]
