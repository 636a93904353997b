"""Warm start with a grown vocabulary: ids stay stable, old rows carry over, new ids get new rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from freshrec.core.artifacts import RunLayout
from freshrec.pipeline.training.checkpoint import grow_into, read_checkpoint
from freshrec.pipeline.training.dataset import Vocab, build_vocab, normalise_interactions
from freshrec.pipeline.training.models import Student, StudentConfig, Teacher, TeacherConfig
from tests.training.lake import clustered_events, write_clean_lake


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return normalise_interactions(pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]))


def test_vocab_appends_new_ids_and_keeps_old_indices() -> None:
    parent = build_vocab(_frame([("u1", "b", 1), ("u1", "a", 2), ("u2", "c", 3)]))
    assert parent.items == ["b", "a", "c"]
    grown = build_vocab(_frame([("u3", "z", 0), ("u1", "a", 5), ("u9", "y", 6)]), parent)
    assert grown.items[: parent.n_items] == parent.items
    assert grown.items[parent.n_items:] == ["z", "y"]
    assert grown.users == ["u1", "u2", "u3", "u9"]
    assert grown.item_index()["z"] == 4  # index 0 is padding


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_grown_model_scores_old_items_exactly_like_the_parent(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "student":
        old, new = Student(StudentConfig(n_items=10, dim=8, hidden=16)), Student(StudentConfig(n_items=14, dim=8, hidden=16))
        torch.nn.init.normal_(old.mlp[-1].weight)  # a non-trivial MLP must carry over too
    else:
        old = Teacher(TeacherConfig(n_items=10, n_categories=2, dim=8, hidden=16), torch.zeros(11, 2))
        new = Teacher(TeacherConfig(n_items=14, n_categories=2, dim=8, hidden=16), torch.zeros(15, 2))
        torch.nn.init.normal_(old.item_out)
        torch.nn.init.normal_(old.wide)
    grown = grow_into(old.state_dict(), new)
    assert grown  # item-indexed tensors did grow
    old.eval(), new.eval()
    history = torch.tensor([[0, 3, 5, 7], [1, 2, 9, 10]])
    candidates = torch.tensor([[1, 2, 10], [4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(new(history, candidates), old(history, candidates))
        assert torch.isfinite(new(torch.tensor([[11, 12, 3]]), torch.tensor([[13, 14, 1]]))).all()


def test_retrain_warm_starts_from_the_parent_bundle_with_new_items(tmp_path: Path) -> None:
    from freshrec.core.layout import Layout
    from freshrec.core.schemas import BUNDLE_VOCAB
    from freshrec.core.settings import load_settings
    from freshrec.pipeline.training.stages import STUDENT, build_datasets, train_students, train_teacher

    settings = load_settings(home=tmp_path, training={"holdout_days": 1})
    layout = Layout(tmp_path)
    first = clustered_events(users=40, items=24, days=4)
    write_clean_lake(layout.clean_events, first)
    parent = layout.models / "v1"
    parent.mkdir(parents=True)
    build_datasets(settings, parent, "temporal")
    train_teacher(settings, parent, epochs=1)
    train_students(settings, parent, epochs=1)

    # a later day brings new users and new items
    later = clustered_events(users=50, items=30, days=1, seed=3, start=dt.date(2026, 3, 5))
    write_clean_lake(layout.clean_events, later)
    child = layout.models / "v2"
    child.mkdir()
    build_datasets(settings, child, "temporal", parent_bundle=parent)
    old_vocab, new_vocab = Vocab.load(parent / BUNDLE_VOCAB), Vocab.load(child / BUNDLE_VOCAB)
    assert new_vocab.n_items > old_vocab.n_items and len(new_vocab.users) > len(old_vocab.users)
    assert new_vocab.items[: old_vocab.n_items] == old_vocab.items
    train_teacher(settings, child, epochs=1, parent_bundle=parent)
    train_students(settings, child, epochs=1, parent_bundle=parent)
    summary = json.loads(RunLayout(child).training_summary("student").read_text())
    assert summary["warm_start"]["warm"] is True
    dim = STUDENT["dim"]
    assert summary["warm_start"]["grown"]["item_out"] == [[dim, old_vocab.n_items + 1], [dim, new_vocab.n_items + 1]]
    control = json.loads(RunLayout(child).training_summary("control").read_text())
    assert control["warm_start"]["warm"] is False
    payload = read_checkpoint(RunLayout(child).checkpoint("student"))
    assert payload["state"]["item_in.weight"].shape[0] == new_vocab.n_items + 1
    assert np.isfinite(payload["state"]["item_out"].numpy()).all()


def test_validation_split_is_stable_across_runs_so_a_parent_never_trained_on_it() -> None:
    """The next run's early-stopping items were never in its parent's fitting histories: a warm start
    would otherwise be scored on items it memorised."""
    from freshrec.pipeline.training import prepare as prep

    events = normalise_interactions(clustered_events(users=60, items=40, days=10, per_user=10))
    cutoff = events["ts"].sort_values().iloc[int(len(events) * 0.7)]
    no_categories = lambda vocab: np.zeros((vocab.n_items + 1, 1), np.float32)  # noqa: E731
    parent = prep.prepare(events[events["ts"] <= cutoff], "temporal", 1, 32, 42, no_categories)
    child = prep.prepare(events, "temporal", 1, 32, 42, no_categories, parent_vocab=parent.vocab)
    parent_fit = {(u, parent.vocab.items[i - 1]) for u, h in zip(parent.train, parent.fit) for i in h}
    child_validation = {(u, child.vocab.items[i - 1]) for u, h, t in zip(child.train, child.fit, child.train.values())
                        for i in set(t) - set(h)}
    assert child_validation and parent_fit
    assert not child_validation & parent_fit - _forced_only(parent, child)


def _forced_only(parent, child) -> set:
    """Pairs of users who had fewer than 5 items in the parent (never validated there) may switch sides."""
    return {(u, parent.vocab.items[i - 1]) for u, h in parent.train.items() if len(h) < 5 for i in h}


def test_a_checkpoint_is_data_only_and_anything_else_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Checkpoints are safetensors (tensors + a JSON header): reading one runs nothing. A pickle (what torch.save
    writes, and what could run code when loaded) or a safetensors file without a model config is refused."""
    from safetensors.torch import save_file

    from freshrec.core.errors import ArtifactIntegrityError
    from freshrec.pipeline.training.checkpoint import read_checkpoint, save_checkpoint

    model = Student(StudentConfig(n_items=5, dim=4))
    plain = save_checkpoint(model, tmp_path / "student.safetensors", {"pruned": [1, 2]})
    payload = read_checkpoint(plain)
    assert set(payload) == {"config", "state", "pruned"} and payload["pruned"] == [1, 2]
    assert payload["config"]["n_items"] == 5
    assert all(torch.equal(payload["state"][k], v) for k, v in model.state_dict().items())
    torch.save({"config": _RunsCode(), "state": {}}, tmp_path / "evil.safetensors")
    with pytest.raises(ArtifactIntegrityError, match="not a FreshRec checkpoint"):
        read_checkpoint(tmp_path / "evil.safetensors")
    assert "ran code" not in capsys.readouterr().out
    save_file({"w": torch.zeros(2)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ArtifactIntegrityError, match="not a FreshRec checkpoint"):
        read_checkpoint(tmp_path / "bare.safetensors")


class _RunsCode:
    def __reduce__(self):
        return (print, ("a checkpoint ran code",))
