"""Secrets come from the environment or from files only their owner can read.

Each secret setting (``admin_token``, ``ingest_token``, ``registry_url``, which may hold a database password)
is read from ``FRESHREC_<NAME>`` or from the file ``FRESHREC_<NAME>_FILE`` names (a Kubernetes or Docker
secret, say). A file is read only when it is a regular file owned by this process's user with no permission
for group or others (0600 or stricter): a secret others can read is a leaked secret, so it is refused with
an error naming the file and its mode rather than used. The TOML config file, which is usually readable by
all, may not hold them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource, TomlConfigSettingsSource

from freshrec.core.errors import ConfigError

SECRET_FIELDS: Final = ("admin_token", "ingest_token", "registry_url")
_GROUP_OR_OTHER: Final = 0o077


def env_name(field: str) -> str:
    return f"FRESHREC_{field.upper()}"


def read_secret_file(path: Path, variable: str) -> str:
    """The secret in ``path`` (one trailing newline dropped); ConfigError unless the file is safe to trust."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{variable} names {path}, which cannot be read: {exc.strerror}") from exc
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{variable} names {path}, which is not a regular file")
    if mode & _GROUP_OR_OTHER:
        raise ConfigError(f"{variable} names {path} with mode {mode:04o}: a secret file must be readable by its "
                          f"owner only (mode 0600 or stricter: chmod 600 {path})")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{variable} names {path} (mode {mode:04o}), owned by uid {info.st_uid}, not by this "
                          f"user (uid {os.geteuid()}): a secret file must belong to the user that reads it")
    try:
        secret = path.read_text().removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise ConfigError(f"{variable} names {path}, which cannot be read: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(f"{variable} names {path}, which is empty")
    return secret


class SecretFilesSource(PydanticBaseSettingsSource):
    """Settings source of the ``FRESHREC_<NAME>_FILE`` variables (a secret set both ways is an error)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # every value comes from __call__

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in SECRET_FIELDS:
            variable = f"{env_name(name)}_FILE"
            path = os.environ.get(variable)
            if not path:
                continue
            if os.environ.get(env_name(name)):
                raise ConfigError(f"both {env_name(name)} and {variable} are set: set one of them")
            values[name] = read_secret_file(Path(path).expanduser(), variable)
        return values


def _is_secret(name: str, value: object) -> bool:
    """A registry URL without a password is plain configuration; the tokens always are secrets."""
    if name == "registry_url":
        return isinstance(value, str) and urlsplit(value).password is not None
    return True


class SecretFreeTomlSource(TomlConfigSettingsSource):
    """The TOML config file, refused when it holds a secret."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        held = [name for name in SECRET_FIELDS if name in values and _is_secret(name, values[name])]
        if held:
            advice = ", ".join(f"{env_name(n)} or {env_name(n)}_FILE" for n in held)
            raise ConfigError(f"the config file holds the secret(s) {', '.join(held)}: set {advice} instead")
        return values
