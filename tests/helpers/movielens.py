"""Fetch ML-100K from the recbole wheel on PyPI into a cache outside the repo (never committed)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

RECBOLE = "recbole==1.2.1"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
_PREFIX = "recbole/dataset_example/ml-100k/"


def cache_dir() -> Path:
    # tests/conftest.py strips FRESHREC_* variables before tests run, so inside pytest the cache is
    # steered with XDG_CACHE_HOME; FRESHREC_DATA_CACHE works for scripts.
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "freshrec"
    root = Path(os.environ.get("FRESHREC_DATA_CACHE", default))
    return root / "ml-100k"


def fetch_ml100k() -> Path:
    """Return a folder holding ml-100k.inter/.item/.user, downloading the wheel once."""
    target = cache_dir()
    if all((target / f).is_file() for f in FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", RECBOLE, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("recbole-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for name in FILES:
                data = zf.read(_PREFIX + name)
                # A per-process name: parallel test workers may fetch at the same time.
                partial = target / f"{name}.{os.getpid()}.part"
                partial.write_bytes(data)
                partial.replace(target / name)  # atomic: a crash never leaves a half file
    return target
