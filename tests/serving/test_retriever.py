"""The retriever refuses an index that does not fit its tower or vocabulary, and over-fetches when asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.core.errors import ArtifactIntegrityError
from freshrec.pipeline.export.retrieval import IndexParams, build_index, export_user_tower, keys_of
from freshrec.pipeline.training.models import Student, StudentConfig
from freshrec.serving.retrieval import Retriever

N_ITEMS = 80


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retrieval")
    torch.manual_seed(0)
    student = Student(StudentConfig(n_items=N_ITEMS, dim=8, hidden=16)).eval()
    tower = export_user_tower(student, folder / "tower.onnx")
    build_index(keys_of(student), folder / "items.usearch", IndexParams(connectivity=8, expansion_add=64))
    other = Student(StudentConfig(n_items=N_ITEMS, dim=4, hidden=8)).eval()
    build_index(keys_of(other), folder / "narrow.usearch")
    (folder / "junk.usearch").write_bytes(b"not an index")
    return student, tower, folder


def test_candidates_are_the_best_inner_products_and_more_are_fetched_on_request(files):
    student, tower, folder = files
    retriever = Retriever(tower, folder / "items.usearch", N_ITEMS, fetch=10, expansion=64)
    history = np.array([[0, 0, 3, 7, 11]], dtype=np.int64)
    (found,) = retriever.candidates(history)
    with torch.no_grad():
        dense = (student.user_vector(torch.from_numpy(history)) @ student.item_out + student.item_bias)[0, 1:].numpy()
    assert found.dtype == np.int64 and set(found.tolist()) == set((np.argsort(-dense)[:10] + 1).tolist())
    (more,) = retriever.candidates(history, more=15)
    assert more.size == 25 and set(found.tolist()) <= set(more.tolist())
    (everything,) = retriever.candidates(history, more=10_000)
    assert everything.size == N_ITEMS


def test_an_index_that_does_not_fit_is_refused(files):
    _, tower, folder = files
    with pytest.raises(ArtifactIntegrityError, match="holds 5-d keys, the tower makes 9-d queries"):
        Retriever(tower, folder / "narrow.usearch", N_ITEMS, fetch=10, expansion=64)
    with pytest.raises(ArtifactIntegrityError, match="the vocabulary 81"):
        Retriever(tower, folder / "items.usearch", N_ITEMS + 1, fetch=10, expansion=64)
    with pytest.raises(ArtifactIntegrityError, match="not a usearch index"):
        Retriever(tower, folder / "junk.usearch", N_ITEMS, fetch=10, expansion=64)


def test_usearch_is_imported_in_one_place_after_onnxruntime():
    """usearch 2.26 loaded before onnxruntime makes `import onnxruntime` crash the interpreter: FreshRec imports it in
    freshrec/serving/retrieval.py only, after onnxruntime, and that order runs in a fresh interpreter."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    import freshrec

    root = Path(freshrec.__file__).parent
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                       if re.search(r"^\s*(from|import)\s+usearch", p.read_text(), re.MULTILINE))
    assert importers == ["serving/retrieval.py"]
    done = subprocess.run([sys.executable, "-c", "import freshrec.serving.retrieval, freshrec.pipeline.export.retrieval, "
                           "onnxruntime; print('ok')"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
