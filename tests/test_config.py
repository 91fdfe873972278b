"""Gateway settings: flags over DOTSOCR_* variables over the TOML file."""

from __future__ import annotations

import pytest

from dotsocr.config import GatewaySettings
from dotsocr.errors import ConfigError


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "gateway.toml"
    path.write_text('port = 9999\nmax_in_flight = 3\napi_keys = ["from-file"]\n')
    monkeypatch.setenv("DOTSOCR_CONFIG", str(path))
    return path


def test_the_file_gives_defaults(config):
    settings = GatewaySettings()
    assert (settings.port, settings.max_in_flight, settings.api_keys) == (9999, 3, ["from-file"])


def test_the_environment_beats_the_file_and_flags_beat_both(config, monkeypatch):
    monkeypatch.setenv("DOTSOCR_PORT", "7000")
    monkeypatch.setenv("DOTSOCR_API_KEYS", "a, b,")
    settings = GatewaySettings()
    assert settings.port == 7000 and settings.api_keys == ["a", "b"]
    assert settings.max_in_flight == 3  # still from the file
    assert GatewaySettings(port=5).port == 5


def test_other_dotsocr_variables_are_not_settings(monkeypatch):
    monkeypatch.setenv("DOTSOCR_CORPUS", "/somewhere")
    monkeypatch.setenv("DOTSOCR_DEBUG", "1")
    assert GatewaySettings().engine == "auto"


def test_a_server_engine_needs_a_server(monkeypatch):
    monkeypatch.delenv("DOTSOCR_SERVER_URL", raising=False)
    with pytest.raises(ConfigError, match="DOTSOCR_SERVER_URL"):
        GatewaySettings(engine="server")


def test_a_missing_config_file_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("DOTSOCR_CONFIG", str(tmp_path / "nowhere.toml"))
    with pytest.raises(ConfigError, match=r"nowhere\.toml, which is not a file"):
        GatewaySettings()
