"""Registry fixtures: a fresh registry on SQLite (per test) or in a private Postgres schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from freshrec.core.registry import Registry, open_registry
from freshrec.core.settings import get_settings

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A tiny model bundle: fake ONNX bytes are enough, the registry only hashes files."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name, payload in {"student.fp32.onnx": b"fp32-model", "student.int8.onnx": b"int8", "teacher.fp32.onnx": b"t"}.items():
        (folder / name).write_bytes(payload)
    return folder


def artifact_specs(bundle: Path) -> dict[str, Path]:
    return {"fp32": bundle / "student.fp32.onnx", "int8": bundle / "student.int8.onnx", "teacher": bundle / "teacher.fp32.onnx"}


@pytest.fixture
def registry(freshrec_home: Path) -> Iterator[Registry]:
    reg = open_registry(get_settings())
    yield reg
    reg.close()


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A uniquely named Postgres schema (dropped afterwards) and a URL whose search_path points at it."""
    schema = f"freshrec_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means no server here
        admin.dispose()
        pytest.fail(f"Postgres at {PG_URL} is required for @pytest.mark.postgres tests: {exc}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def pg_registry(freshrec_home: Path, pg_schema_url: str) -> Iterator[Registry]:
    reg = open_registry(get_settings(), url=pg_schema_url)
    yield reg
    reg.close()
