from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import load_settings
from controlplane.errors import ConfigError


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
        ("unknown_key = 1\n", "unknown_key"),
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
