"""Settings precedence: explicit > env > config file > defaults; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshrec.core.errors import ConfigError
from freshrec.core.layout import Layout, parse_ds
from freshrec.core.settings import load_settings


def test_defaults_put_state_under_home(freshrec_home: Path) -> None:
    settings = load_settings()
    assert settings.home == freshrec_home.resolve()
    assert settings.effective_registry_url == f"sqlite:///{freshrec_home.resolve() / 'registry.db'}"
    assert settings.spark_master == "local[*]"
    assert settings.data.quarantine_max_share == 0.05
    assert Layout(settings.home).raw_events == freshrec_home.resolve() / "lake" / "raw" / "events"


def test_env_beats_file_beats_default(freshrec_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (freshrec_home / "freshrec.toml").write_text(
        'spark_master = "spark://file:7077"\nmodel_name = "from-file"\n[serving]\nmax_batch = 7\nport = 9001\n'
    )
    monkeypatch.setenv("FRESHREC_SPARK_MASTER", "spark://env:7077")
    monkeypatch.setenv("FRESHREC_SERVING__PORT", "9002")
    settings = load_settings()
    assert settings.spark_master == "spark://env:7077"  # env over file
    assert settings.serving.port == 9002  # nested env over file
    assert settings.serving.max_batch == 7  # file over default
    assert settings.model_name == "from-file"
    assert settings.serving.max_wait_ms == 0.5  # default
    assert load_settings(model_name="explicit").model_name == "explicit"  # explicit over everything


def test_explicit_config_path(tmp_path: Path, freshrec_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text("[gates]\nmax_regression = 0.02\n")
    monkeypatch.setenv("FRESHREC_CONFIG", str(config))
    assert load_settings().gates.max_regression == 0.02
    monkeypatch.setenv("FRESHREC_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


def test_unknown_keys_are_rejected(freshrec_home: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(no_such_setting=1)
    (freshrec_home / "freshrec.toml").write_text("[serving]\ntypo_key = 1\n")
    with pytest.raises(ConfigError, match="typo_key"):
        load_settings()


def test_invalid_values_name_the_field(freshrec_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_SERVING__MAX_WAIT_MS", "5")
    with pytest.raises(ConfigError, match="serving.max_wait_ms"):
        load_settings()


def test_layout_lists_days(freshrec_home: Path) -> None:
    layout = Layout(freshrec_home)
    for day in ("2026-01-02", "2026-01-01"):
        (layout.raw_events / f"ds={day}").mkdir(parents=True)
    (layout.raw_events / "_meta").mkdir()
    assert [d.isoformat() for d in layout.raw_days()] == ["2026-01-01", "2026-01-02"]
    assert parse_ds("ds=2026-01-01").isoformat() == "2026-01-01"
    assert layout.feature_days() == []  # nothing published
