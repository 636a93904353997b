"""The real Microsoft Recommenders splitter, as a test oracle (cached outside the repo, never committed).

Only ``recommenders/datasets/python_splitters.py`` and the two small modules it imports are taken from
the pure-Python wheel on PyPI; the package itself is not installed (its dependencies are heavy).
The splitter module imports scikit-learn at the top for a function the stratified split never calls,
so a placeholder stands in for it while the module loads when scikit-learn is absent.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.helpers.movielens import cache_dir

RECOMMENDERS = "recommenders==1.2.1"
_MODULES = (
    "recommenders/__init__.py",
    "recommenders/datasets/__init__.py",
    "recommenders/datasets/python_splitters.py",
    "recommenders/datasets/split_utils.py",
    "recommenders/utils/__init__.py",
    "recommenders/utils/constants.py",
)


def _fetch() -> Path:
    target = cache_dir().parent / "recommenders-1.2.1"
    if all((target / m).is_file() for m in _MODULES):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", RECOMMENDERS, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("recommenders-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for member in _MODULES:
                path = target / member
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f"{path.name}.{os.getpid()}.part")  # parallel workers may fetch too
                partial.write_bytes(zf.read(member))
                partial.replace(path)
    return target


def load_python_stratified_split() -> Callable:
    """``recommenders.datasets.python_splitters.python_stratified_split`` of the released package."""
    root = str(_fetch())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        importlib.import_module("sklearn.model_selection")
    except ModuleNotFoundError:
        placeholder = types.ModuleType("sklearn.model_selection")
        placeholder.train_test_split = None  # used only by python_random_split
        sys.modules["sklearn"], sys.modules["sklearn.model_selection"] = types.ModuleType("sklearn"), placeholder
        try:
            return importlib.import_module("recommenders.datasets.python_splitters").python_stratified_split
        finally:  # nothing else in the test process may mistake the placeholder for scikit-learn
            del sys.modules["sklearn"], sys.modules["sklearn.model_selection"]
    return importlib.import_module("recommenders.datasets.python_splitters").python_stratified_split
