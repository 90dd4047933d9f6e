"""deploy/kubernetes/, validated offline: every resource against the schemas of a current
Kubernetes release (``kubernetes-validate`` ships them, strict: an unknown field fails),
the Kustomize base complete, and the manifests consistent with the settings the ConfigMap
gives warmctl (ports, probe paths, namespace, label selector, workload) and with the calls
the Kubernetes provider makes (the Role). No cluster is needed, nor reachable here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controlplane.config import Settings, load_settings
from controlplane.fleet.kubernetes_pods import rbac_rules
from tests.conftest import ROOT

BASE = ROOT / "deploy" / "kubernetes"
VERSION = kubernetes_validate.latest_version()


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return data


def _resources() -> list[dict[str, Any]]:
    return [d for name in _kustomization()["resources"] for d in _documents(BASE / name)]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [r for r in _resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _settings(tmp_path: Path) -> Settings:
    text = _one("ConfigMap", "warmctl-config")["data"]["warmctl.toml"]
    path = tmp_path / "warmctl.toml"
    path.write_text(text)
    return load_settings(path)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _port(container: dict[str, Any], probe: str) -> tuple[str, int]:
    """A probe's path and the container port it reaches (by name or number)."""
    get = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return get["path"], ports.get(get["port"], get["port"])


def test_the_base_lists_every_file_and_only_those() -> None:
    listed = set(_kustomization()["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("name", sorted(p.name for p in BASE.glob("*.yaml")
                                        if p.name != "kustomization.yaml"))
def test_each_resource_is_valid_for_a_current_kubernetes(name: str) -> None:
    for resource in _documents(BASE / name):
        kubernetes_validate.validate(resource, VERSION, strict=True)


def test_a_broken_resource_is_refused() -> None:
    deployment = _one("Deployment", "triton")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"][
        "prot"] = 8000
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not here")
def test_the_rendered_base_is_valid_and_namespaced() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(BASE)], check=True,
                              capture_output=True, text=True, timeout=60).stdout
    resources = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(resources) == len(_resources())
    for resource in resources:
        kubernetes_validate.validate(resource, VERSION, strict=True)
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == _kustomization()["namespace"]


def test_the_configmap_is_valid_settings_for_this_deployment(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    k = s.kubernetes
    assert k.enabled and k.kubeconfig is None  # in-cluster config
    assert k.namespace == _kustomization()["namespace"]
    triton = _one("Deployment", k.workload_name)
    assert k.workload_kind == triton["kind"]
    labels = dict(term.split("=") for term in k.label_selector.split(","))
    assert labels.items() <= triton["spec"]["template"]["metadata"]["labels"].items()
    assert triton["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = _one("PodDisruptionBudget", "triton")
    assert pdb["spec"]["selector"]["matchLabels"] == triton["spec"]["selector"]["matchLabels"]


def test_triton_listens_and_is_probed_where_the_settings_say(tmp_path: Path) -> None:
    k = _settings(tmp_path).kubernetes
    triton = _container(_one("Deployment", k.workload_name))
    assert {k.grpc_port, k.http_port, k.metrics_port} == {
        p["containerPort"] for p in triton["ports"]}
    assert _port(triton, "readinessProbe") == ("/v2/health/ready", k.http_port)
    assert _port(triton, "livenessProbe") == ("/v2/health/live", k.http_port)
    # the drain ([fleet] drain_timeout_s) ends before the kubelet stops Triton
    sleep = triton["lifecycle"]["preStop"]["exec"]["command"]
    assert float(sleep[-1]) > _settings(tmp_path).fleet.drain_timeout_s


def test_the_control_plane_is_probed_and_served_where_the_settings_say(
        tmp_path: Path) -> None:
    s = _settings(tmp_path)
    deployment = _one("Deployment", "warmctl")
    cp = _container(deployment)
    assert cp["args"] == ["serve"]
    env = {e["name"]: e for e in cp["env"]}
    config_dir = next(m["mountPath"] for m in cp["volumeMounts"] if m["name"] == "config")
    assert env["WARMCTL_CONFIG_FILE"]["value"] == f"{config_dir}/warmctl.toml"
    assert _port(cp, "livenessProbe") == ("/healthz", s.admin.port)
    assert _port(cp, "readinessProbe") == ("/readyz", s.admin.port)
    ports = {p["name"]: p["containerPort"] for p in cp["ports"]}
    assert ports == {"grpc": s.gateway.port, "http": s.gateway.http_port,
                     "admin": s.admin.port}
    assert s.admin.host == s.gateway.host == "0.0.0.0"
    for service in ("warmctl-gateway", "warmctl-admin"):
        svc = _one("Service", service)
        assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    gateway = {p["name"]: p["port"] for p in _one("Service", "warmctl-gateway")["spec"]["ports"]}
    assert gateway == {"grpc": 8001, "http": 8000}  # Triton's own ports, for clients


def test_the_role_grants_exactly_what_the_provider_calls(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    role = _one("Role", "warmctl")
    assert role["rules"] == rbac_rules(s.kubernetes)
    binding = _one("RoleBinding", "warmctl")
    assert binding["roleRef"]["name"] == "warmctl"
    account = _one("Deployment", "warmctl")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    _one("ServiceAccount", account)


def test_the_images_are_the_ones_this_repo_builds() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    triton_image = compose["x-triton"]["image"]
    assert _container(_one("Deployment", "triton"))["image"] == triton_image
    assert _container(_one("Deployment", "warmctl"))["image"] == \
        compose["services"]["controlplane"]["image"]
