from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import load_settings
from controlplane.errors import ConfigError
from tests.conftest import ROOT


def test_defaults_pick_embedded_triton_on_free_ports(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.triton.url is None
    assert (settings.triton.grpc_port, settings.triton.http_port) == (0, 0)
    assert settings.db_url == f"sqlite:///{tmp_path / 'controlplane.db'}"
    assert settings.data_dir.is_absolute()


def test_toml_file_env_and_arguments_layer_in_that_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "warmctl.toml"
    config.write_text(
        "[admin]\nport = 9000\nhost = '0.0.0.0'\n"
        "[models.a]\npinned = true\npriority = 1\n"
        "[models.b]\npinned = true\npriority = 5\n"
        "[models.c]\npinned = false\n"
    )
    monkeypatch.setenv("WARMCTL_ADMIN__PORT", "9100")
    settings = load_settings(config)
    assert settings.admin.port == 9100  # env beats the file
    assert settings.admin.host == "0.0.0.0"  # the file beats defaults
    assert settings.pinned_models() == ["b", "a"]  # priority order, unpinned left out
    assert load_settings(config, admin={"port": 9200}).admin.port == 9200


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "other.toml"
    config.write_text("instance_name = 'gpu-0'\n")
    monkeypatch.setenv("WARMCTL_CONFIG_FILE", str(config))
    assert load_settings().instance_name == "gpu-0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[admin]\nport = 'eighty'\n", "admin.port"),
        ("[triton]\nload_timeout_s = -1\n", "triton.load_timeout_s"),
        ("[admin\nport = 1\n", "cannot read config file"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_settings(config)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "key", "table", "expected"),
    [
        ("[scheduler]\nmemory_budget = 8000\n", "scheduler.memory_budget", "[scheduler]",
         "unknown key (did you mean 'memory_budget_mb'?)"),
        ("[models.ranker]\npined = true\n", "models.ranker.pined", "[models.ranker]",
         "unknown key (did you mean 'pinned'?)"),
        ("[warmup.probe]\nwindw = 3\n", "warmup.probe.windw", "[warmup.probe]",
         "unknown key (did you mean 'window'?)"),
        ("[[scheduler.rules]]\nmodel = 'm'\nstart = '08:00'\nend = '09:00'\nday = 'sat'\n",
         "scheduler.rules.0.day", "[[scheduler.rules]] entry 1",
         "unknown key (did you mean 'days'?)"),
        ("[gateway]\nfrobnicate = 1\n", "gateway.frobnicate", "[gateway]", "unknown key"),
        ("unknown_key = 1\n", "unknown_key", "top level", "unknown key"),
    ],
)
def test_unknown_keys_in_any_section_are_refused_by_name(
        tmp_path: Path, text: str, key: str, table: str, expected: str) -> None:
    config = tmp_path / "typo.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert str(refused.value) == f"invalid configuration: {key} ({config}, {table}): {expected}"


def test_unknown_key_from_the_environment_names_the_variable_not_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file is in use, but the misspelt key is an environment variable's."""
    config = tmp_path / "warmctl.toml"
    config.write_text("[gateway]\nport = 9001\n")
    monkeypatch.setenv("WARMCTL_GATEWAY__MAX_REQUEST_BYTEZ", "1")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert str(refused.value) == (
        "invalid configuration: gateway.max_request_bytez (environment variable "
        "WARMCTL_GATEWAY__MAX_REQUEST_BYTEZ): unknown key (did you mean 'max_request_bytes'?)")


def test_each_problem_names_its_own_source(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The file, a variable holding JSON, a lower-case variable name, and an argument."""
    config = tmp_path / "warmctl.toml"
    config.write_text("[admin]\nport = 'eighty'\n")
    monkeypatch.setenv("WARMCTL_MODELS__RANKER", '{"pined": true}')
    monkeypatch.setenv("warmctl_scheduler__memory_budget", "8000")
    with pytest.raises(ConfigError) as refused:
        load_settings(config, gateway={"frobnicate": 1})
    problems = str(refused.value).removeprefix("invalid configuration: ").split("; ")
    assert sorted(p.split(": ")[0] for p in problems) == [
        f"admin.port ({config}, [admin])",
        "gateway.frobnicate (argument)",
        "models.ranker.pined (environment variable WARMCTL_MODELS__RANKER)",
        "scheduler.memory_budget (environment variable warmctl_scheduler__memory_budget)"]


def test_an_environment_value_that_is_not_json_is_not_blamed_on_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "warmctl.toml"
    config.write_text("[gateway]\nport = 9001\n")
    monkeypatch.setenv("WARMCTL_MODELS", "not json")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    message = str(refused.value)
    assert message.startswith("invalid configuration: ") and '"models"' in message
    assert str(config) not in message and "config file" not in message


def test_our_backends_are_found_from_any_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.backends_dir == ROOT / "triton_backends"
    assert (settings.backends_dir / "torchscript" / "model.py").is_file()


def test_gateway_bounds_default_to_tritons_and_no_tracebacks() -> None:
    gateway = load_settings().gateway
    # Triton's own gRPC limit: what plain Triton serves, the gateway serves; the total bound
    # is computed from the memory at start-up
    assert (gateway.max_request_bytes, gateway.max_buffered_bytes,
            gateway.expose_tracebacks) == ((2 << 30) - 1, None, False)
    with pytest.raises(ConfigError, match=r"gateway\.max_request_bytes"):
        load_settings(gateway={"max_request_bytes": 0})


def test_without_instances_one_comes_from_the_triton_section(tmp_path: Path) -> None:
    embedded = load_settings(data_dir=tmp_path, scheduler={"memory_budget_mb": 4000},
                             triton={"grpc_port": 9001})
    [(name, spec)] = embedded.fleet_instances().items()
    assert (name, spec.provider, spec.grpc_port, spec.memory_budget_mb) == (
        "default", "embedded", 9001, 4000)
    external = load_settings(data_dir=tmp_path, triton={"url": "t:8001"})
    assert external.fleet_instances()["default"].provider == "static"
    assert external.fleet_instances()["default"].url == "t:8001"


def test_instances_from_a_file_inherit_unset_budgets(tmp_path: Path) -> None:
    config = tmp_path / "warmctl.toml"
    config.write_text(
        "[scheduler]\nmemory_budget_mb = 8000\n"
        "[instances.gpu1]\ncuda_visible_devices = '1'\nmemory_budget_mb = 2000\n"
        "[instances.gpu0]\ncuda_visible_devices = '0'\n"
        "[instances.remote]\nprovider = 'static'\nurl = '10.0.0.7:8001'\n")
    instances = load_settings(config, data_dir=tmp_path).fleet_instances()
    assert list(instances) == ["gpu0", "gpu1", "remote"]  # a stable order
    assert [i.memory_budget_mb for i in instances.values()] == [8000, 2000, 8000]
    assert instances["gpu0"].cuda_visible_devices == "0"
    assert instances["remote"].url == "10.0.0.7:8001"


@pytest.mark.parametrize(("instances", "problem"), [
    ({"Bad Name": {}}, "instance names must match"),
    ({"x": {"provider": "static"}}, "a static instance needs url"),
    ({"x": {"url": "h:1"}}, "url, metrics_url and http_url are for static instances"),
    ({"x": {"provider": "k8s"}}, "instances.x.provider"),
])
def test_bad_instances_are_refused_clearly(tmp_path: Path, instances: dict[str, object],
                                           problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(data_dir=tmp_path, instances=instances)
    assert problem in str(refused.value)
