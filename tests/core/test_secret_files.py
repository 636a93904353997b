"""Secrets from the environment or from FRESHREC_<NAME>_FILE files only their owner can read; never from the
config file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from freshrec.core.errors import ConfigError
from freshrec.core.settings import load_settings

PG_URL = "postgresql+psycopg://freshrec:s3cret@db:5432/registry"


def _secret(tmp_path: Path, name: str, content: str, mode: int) -> Path:
    path = tmp_path / name
    path.write_text(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_secrets_are_read_from_owner_only_files(freshrec_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                mode: int) -> None:
    monkeypatch.setenv("FRESHREC_ADMIN_TOKEN_FILE", str(_secret(tmp_path, "admin", "adm-token\n", mode)))
    monkeypatch.setenv("FRESHREC_INGEST_TOKEN_FILE", str(_secret(tmp_path, "ingest", "ing-token", mode)))
    monkeypatch.setenv("FRESHREC_REGISTRY_URL_FILE", str(_secret(tmp_path, "url", PG_URL + "\n", mode)))
    settings = load_settings()
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "adm-token"
    assert settings.ingest_token is not None and settings.ingest_token.get_secret_value() == "ing-token"
    assert settings.registry_url == PG_URL


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_a_secret_file_others_may_read_or_write_is_refused(freshrec_home: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, mode: int) -> None:
    path = _secret(tmp_path, "admin", "adm-token", mode)
    monkeypatch.setenv("FRESHREC_ADMIN_TOKEN_FILE", str(path))
    with pytest.raises(ConfigError, match=rf"FRESHREC_ADMIN_TOKEN_FILE names {path} with mode {mode:04o}.*0600"):
        load_settings()


def test_a_secret_file_of_another_user_is_refused(freshrec_home: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = _secret(tmp_path, "ingest", "ing-token", 0o600)
    monkeypatch.setenv("FRESHREC_INGEST_TOKEN_FILE", str(path))
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(path).st_uid + 1)  # as if another user owned it
    with pytest.raises(ConfigError, match=rf"{path} \(mode 0600\), owned by uid \d+, not by this user"):
        load_settings()


@pytest.mark.parametrize(("content", "message"), [("", "empty"), (None, "cannot be read")])
def test_an_empty_or_missing_secret_file_is_refused(freshrec_home: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, content: str | None,
                                                    message: str) -> None:
    path = _secret(tmp_path, "admin", content, 0o600) if content is not None else tmp_path / "absent"
    monkeypatch.setenv("FRESHREC_ADMIN_TOKEN_FILE", str(path))
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_a_secret_set_both_ways_is_refused(freshrec_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("FRESHREC_ADMIN_TOKEN_FILE", str(_secret(tmp_path, "admin", "from-file", 0o600)))
    with pytest.raises(ConfigError, match="both FRESHREC_ADMIN_TOKEN and FRESHREC_ADMIN_TOKEN_FILE"):
        load_settings()


def test_the_environment_still_works_alone(freshrec_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_ADMIN_TOKEN", "from-env")
    token = load_settings().admin_token
    assert token is not None and token.get_secret_value() == "from-env"


@pytest.mark.parametrize("line", ['admin_token = "t"', 'ingest_token = "t"', f'registry_url = "{PG_URL}"'])
def test_the_config_file_may_not_hold_secrets(freshrec_home: Path, line: str) -> None:
    (freshrec_home / "freshrec.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match=r"config file holds the secret.*FRESHREC_\w+_FILE instead"):
        load_settings()


def test_a_registry_url_without_password_may_sit_in_the_config_file(freshrec_home: Path) -> None:
    (freshrec_home / "freshrec.toml").write_text('registry_url = "postgresql+psycopg://freshrec@db/registry"\n')
    assert load_settings().registry_url == "postgresql+psycopg://freshrec@db/registry"
