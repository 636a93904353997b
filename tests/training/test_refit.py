"""The served models are refitted on all interactions once the gates passed; the gated ones stay aside."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.training.lake import clustered_events, write_clean_lake, write_item_meta


def _gated_run(home: Path) -> tuple[object, Path]:
    from freshrec.core.layout import Layout
    from freshrec.core.settings import load_settings
    from freshrec.pipeline.training.stages import build_datasets, train_students, train_teacher

    settings = load_settings(home=home, training={"holdout_days": 1})
    layout = Layout(home)
    write_clean_lake(layout.clean_events, clustered_events(users=48, items=32, days=5))
    write_item_meta(layout.meta, items=32)
    run = layout.models / "run-1"
    run.mkdir(parents=True)
    build_datasets(settings, run, "temporal")
    train_teacher(settings, run, epochs=1)
    train_students(settings, run, epochs=2)
    return settings, run


def test_prepare_keeps_every_interaction_for_the_refit() -> None:
    from freshrec.pipeline.training import prepare as prep
    from freshrec.pipeline.training.dataset import normalise_interactions

    events = normalise_interactions(clustered_events(users=20, items=16, days=5))
    data = prep.prepare(events, "temporal", 1, 64, 42, lambda vocab: np.zeros((vocab.n_items + 1, 1), np.float32))
    train, everything = data.parts["train"], data.parts["all"]
    assert everything["rows"] == len(events) == train["rows"] + data.parts["holdout"]["rows"]
    assert everything["user_item_pairs"] == sum(len(h) for h in data.full.values()) > train["user_item_pairs"]
    assert everything["last_ts"] > train["last_ts"] and everything["first_ts"] == train["first_ts"]
    # The full history is the training one with what came after the cut at the end (an item touched again moves
    # there: histories are ordered by last interaction).
    later = events[events["ts"] > pd.Timestamp(data.cutoff)].groupby("user_id")["item_id"].agg(set)
    index = data.vocab.item_index()
    moved_any = False
    for user, history in data.train.items():
        moved = {index[i] for i in later.get(user, set())}
        kept = [i for i in history if i not in moved]
        moved_any |= len(kept) < len(history)
        np.testing.assert_array_equal(data.full[user][: len(kept)], kept)
        assert set(data.full[user].tolist()) == set(history.tolist()) | moved
    assert moved_any  # the data has re-touched items, so the reordering was exercised
    facts = prep.training_data_facts(data, served_on_all=True)
    assert facts["served_model"]["rows"] == len(events) and facts["holdout_trained_model"]["rows"] == train["rows"]
    assert prep.training_data_facts(data, served_on_all=False)["served_model"]["rows"] == train["rows"]


def test_served_student_differs_from_the_gated_one_and_saw_more_interactions(tmp_path: Path) -> None:
    from freshrec.core.artifacts import RunLayout
    from freshrec.pipeline.training import prepare as prep
    from freshrec.pipeline.training.checkpoint import read_checkpoint
    from freshrec.pipeline.training.ease import WideConfig, ease_weights
    from freshrec.pipeline.training.stages import read_training_summaries, refit_on_all

    settings, run = _gated_run(tmp_path)
    paths = RunLayout(run)
    gated = {name: read_checkpoint(paths.checkpoint(name))["state"] for name in ("teacher", "student")}
    refit_on_all(settings, run)

    record = json.loads(paths.refit.read_text())
    data = prep.load(paths.training_set)
    gated_pairs = sum(len(h) for h in data.fit)
    summaries = read_training_summaries(run)
    for name in ("teacher", "student"):
        kept = read_checkpoint(paths.eval_checkpoint(name))["state"]
        assert all(torch.equal(kept[k], gated[name][k]) for k in gated[name]), f"{name}.eval.safetensors is not the gated model"
        model = record["models"][name]
        assert model["user_item_pairs"] == data.parts["all"]["user_item_pairs"] > gated_pairs
        assert model["epochs"] == summaries[name]["best_epoch"]  # same epoch count as the gated model
    served = read_checkpoint(paths.checkpoint("student"))["state"]
    assert any(not torch.equal(served[k], gated["student"][k]) for k in served)
    assert record["models"]["student"]["distilled"] and "control" not in record["models"]
    teacher = read_checkpoint(paths.checkpoint("teacher"))["state"]
    wide = WideConfig(**summaries["teacher"]["wide"])  # the configuration chosen on the validation split
    users = sorted(data.full)
    full_ease = ease_weights([data.full[u] for u in users], data.vocab.n_items, wide.l2, [data.full_times[u] for u in users],
                             wide.session_weight, wide.session_tau_s)
    np.testing.assert_allclose(teacher["wide"].numpy(), full_ease, atol=1e-5)  # the wide layer saw every history
    assert not np.allclose(gated["teacher"]["wide"].numpy(), full_ease, atol=1e-6)
    assert record["data"]["served_model"]["rows"] == data.parts["all"]["rows"]

    # a retried refit keeps the gated models aside instead of overwriting them with the refit
    refit_on_all(settings, run)
    again = read_checkpoint(paths.eval_checkpoint("student"))["state"]
    assert all(torch.equal(again[k], gated["student"][k]) for k in again)


def test_refit_runs_only_after_passing_gates_and_when_enabled(tmp_path: Path) -> None:
    from freshrec.core.artifacts import GateVerdict, RunLayout, write_artifact
    from freshrec.core.settings import load_settings
    from freshrec.pipeline.training.stages import refit_reason

    run = tmp_path / "run"
    gates = RunLayout(run).gates
    settings = load_settings(home=tmp_path)
    assert "no gate verdict" in refit_reason(settings, run)
    write_artifact(gates, GateVerdict(passed=False, gates=[], reasons=["floor: low"]))
    assert "gates failed" in refit_reason(settings, run)
    write_artifact(gates, GateVerdict(passed=True, gates=[], reasons=[]))
    assert refit_reason(settings, run) is None
    assert "off" in refit_reason(load_settings(home=tmp_path, training={"refit_on_all": False}), run)
    assert "off" in refit_reason(settings, run, enabled=False)
    assert refit_reason(load_settings(home=tmp_path, training={"refit_on_all": False}), run, enabled=True) is None


def _assert_same(a, b, where: str = "data") -> None:
    import dataclasses

    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_training_set_round_trips_without_pickle(tmp_path: Path) -> None:
    from freshrec.pipeline.training import prepare as prep
    from freshrec.pipeline.training.dataset import normalise_interactions

    events = normalise_interactions(clustered_events(users=20, items=16, days=5))
    data = prep.prepare(events, "temporal", 1, 64, 42, lambda vocab: np.zeros((vocab.n_items + 1, 1), np.float32))
    path = prep.save(data, tmp_path / "training_set.npz")
    with np.load(path, allow_pickle=False) as stored:  # every entry loads without pickle
        assert all(stored[name].dtype != object for name in stored.files)
    _assert_same(data, prep.load(path))
    from freshrec.core.errors import DataValidationError

    (tmp_path / "garbage.npz").write_bytes(b"not a training set")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    for name in ("garbage.npz", "other.npz"):
        with pytest.raises(DataValidationError, match=name):
            prep.load(tmp_path / name)
