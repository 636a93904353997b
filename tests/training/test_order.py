"""Order-aware teacher and student (training.order_window): what they add, that it exports, and that on a world
with sequential structure they beat their order-blind selves on the time-ordered protocol."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from freshrec.core.settings import Settings
from freshrec.pipeline.training.checkpoint import warm_started
from freshrec.pipeline.training.ease import WideConfig, select_follow, transitions
from freshrec.pipeline.training.models import Student, StudentConfig, Teacher, TeacherConfig, config_dict, recent_items
from freshrec.pipeline.training.trainer import FitConfig, training_batch


def test_recent_items_are_the_newest_right_aligned_and_left_padded() -> None:
    history = torch.tensor([[0, 0, 4, 5, 6], [1, 2, 3, 4, 5]])
    assert recent_items(history, 3).tolist() == [[4, 5, 6], [3, 4, 5]]
    assert recent_items(torch.tensor([[7, 8]]), 4).tolist() == [[0, 0, 7, 8]]


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_a_fresh_order_aware_model_is_its_order_blind_self_until_it_learns(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "student":
        blind, aware = (Student(StudentConfig(n_items=30, dim=8, hidden=16, order_window=w)) for w in (0, 4))
    else:
        blind, aware = (Teacher(TeacherConfig(n_items=30, dim=8, hidden=16, order_window=w)) for w in (0, 4))
    aware.load_state_dict(blind.state_dict(), strict=False)  # the shared parameters; the order terms stay at 0
    blind.eval(), aware.eval()
    history, candidates = torch.tensor([[3, 7, 9, 11]]), torch.arange(1, 31)[None]
    with torch.no_grad():
        torch.testing.assert_close(aware(history, candidates), blind(history, candidates))
        torch.testing.assert_close(aware(history.flip(1), candidates), aware(history, candidates))
        torch.nn.init.normal_(aware.order.position)
        torch.nn.init.normal_(aware.order.follow.weight)
        if kind == "student":
            aware.init_successors(torch.rand(31, 31))
        if kind == "teacher":
            torch.nn.init.normal_(aware.item_out)  # the deep part's output starts at 0
        assert not torch.allclose(aware(history.flip(1), candidates), aware(history, candidates))


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_order_aware_models_export_to_onnx_for_any_history_length(kind: str, tmp_path: Path) -> None:
    from freshrec.pipeline.export.onnx_export import run_scores, session
    from freshrec.pipeline.export.stage import export_fp32

    torch.manual_seed(1)
    model = (Student(StudentConfig(n_items=40, dim=8, hidden=16, order_window=4)) if kind == "student"
             else Teacher(TeacherConfig(n_items=40, dim=8, hidden=16, order_window=4)))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.is_floating_point():
                parameter.add_(torch.randn_like(parameter) * 0.1)
        if isinstance(model, Student) and model.successor_ids is not None:
            model.successor_ids.copy_(torch.randint(1, 41, model.successor_ids.shape))  # repeats add up, as in torch
    model.eval()
    graph = session(export_fp32(model, tmp_path / "model.onnx"))
    candidates = torch.arange(1, 41).expand(3, 40).contiguous()
    for length in (1, 3, 4, 9):  # shorter and longer than the window
        history = torch.randint(1, 41, (3, length))
        history[0, : max(0, length - 2)] = 0  # a padded row
        with torch.no_grad():
            expected = model(history, candidates).numpy()
        np.testing.assert_allclose(run_scores(graph, history.numpy(), candidates.numpy()), expected, atol=1e-5)


def test_students_try_order_only_where_their_teachers_validation_chose_a_transition_term() -> None:
    from freshrec.pipeline.training.stages import student_windows

    settings = Settings(training={"order_window": 8})
    teacher = Teacher(TeacherConfig(n_items=10, dim=4, hidden=8, order_window=8))
    assert teacher.follow_wide is not None and student_windows(settings, teacher) == (0,)  # scale 0 chosen
    with torch.no_grad():
        teacher.follow_wide[1, 2] = 0.5
    assert student_windows(settings, teacher) == (0, 8)  # both are fitted; the validation keeps one
    assert student_windows(Settings(training={"order_window": 0}), teacher) == (0,)


def test_transitions_count_what_follows_each_item_shrunk_by_the_smoothing() -> None:
    matrix = transitions([np.array([1, 2, 3]), np.array([1, 2]), np.array([1, 3]), np.array([4])], 5, smoothing=1.0)
    assert matrix.shape == (5, 5) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix[1], [0, 0, 2 / 4, 1 / 4, 0])  # 1 was followed 3 times: twice by 2, once by 3
    np.testing.assert_allclose(matrix[2], [0, 0, 0, 1 / 2, 0])
    assert not matrix[3].any() and not matrix[4].any() and not matrix[0].any() and not matrix[:, 0].any()


def test_select_follow_keeps_the_order_blind_model_when_order_does_not_help() -> None:
    wide, weights, histories = WideConfig(), np.zeros((5, 5), np.float32), [np.array([1, 2, 3])]
    chosen, trials = select_follow(wide, weights, histories, lambda b, t: 0.5 if t is None else 0.4, typical=1.0)
    assert chosen.follow_scale == 0.0 and len(trials) > 1
    chosen, _ = select_follow(wide, weights, histories, lambda b, t: 0.5 if t is None else 0.6 + t.max(), typical=1.0)
    assert chosen.follow_scale > 0


def test_next_item_rows_predict_the_item_after_a_prefix() -> None:
    histories = [np.array([5, 6, 7, 8]), np.array([9])]
    cfg = FitConfig(history_len=6, next_item_share=1.0, keep_prob=0.5)
    inputs, targets = training_batch(histories, 10, cfg, np.random.default_rng(3))
    prefix = [i for i in inputs[0].tolist() if i]
    assert prefix == [5, 6, 7, 8][: len(prefix)] and 1 <= len(prefix) <= 3
    assert np.flatnonzero(targets[0]).tolist() == [[5, 6, 7, 8][len(prefix)]]
    assert targets[1].sum() == 1 and targets[1, 9] == 1  # one item: no next item, a denoising row


def test_an_order_blind_parent_saved_before_the_field_existed_still_warm_starts() -> None:
    model = Student(StudentConfig(n_items=12, dim=8, hidden=16))
    parent_config = {k: v for k, v in config_dict(model).items() if k != "order_window"}
    assert warm_started(parent_config, model.state_dict(), model)["warm"]
    aware = Student(StudentConfig(n_items=12, dim=8, hidden=16, order_window=4))
    assert not warm_started(parent_config, model.state_dict(), aware)["warm"]


SEQUENTIAL_WORLD = dict(users=300, items=200, events_per_day=3000, session_intent=1.5, transition_share=0.5, repeat_share=0.15)


def _sequential_data(tmp_path: Path):
    from freshrec.pipeline.training import protocols
    from freshrec.pipeline.training.dataset import normalise_interactions
    from freshrec.tools.data.synth import SynthConfig, synthesize

    list(synthesize(SynthConfig(out=tmp_path, start=dt.date(2026, 1, 5), days=6, seed=5, **SEQUENTIAL_WORLD)))
    events = pd.concat(pd.read_parquet(p) for p in sorted(tmp_path.glob("ds=*/*.parquet")))
    return protocols.prepare(normalise_interactions(events), "sequential", 7, 50, 42,
                             lambda v: np.zeros((v.n_items + 1, 1), np.float32))


@pytest.mark.slow
def test_the_stages_keep_the_order_aware_student_where_it_wins_validation(tmp_path: Path) -> None:
    """train_students fits the order-blind and the order-aware student and keeps the validation's winner; the
    refit trains the kept one again."""
    from freshrec.core.artifacts import RunLayout
    from freshrec.pipeline.training import prepare as prep
    from freshrec.pipeline.training import stages

    data = _sequential_data(tmp_path / "world")
    run = tmp_path / "run"
    prep.save(data, RunLayout(run).training_set)
    settings = Settings(home=tmp_path / "home", training={"order_window": 8})
    stages.train_teacher(settings, run, 2)
    stages.train_students(settings, run, 4)
    summaries = stages.read_training_summaries(run)
    trials = summaries["student"]["order_trials"]
    assert set(trials) == {"0", "8"} and trials["8"] > trials["0"] and summaries["student"]["order_window"] == 8
    assert summaries["control"]["order_window"] == 8
    models, _ = stages.refit(settings, data, data.train, data.train_times, summaries, None, "refit")
    assert models["student"].config.order_window == 8 and models["student"].successor_ids is not None


@pytest.mark.slow
def test_on_a_sequential_world_the_order_aware_models_beat_their_order_blind_selves(tmp_path: Path) -> None:
    """The stages' own teacher (closed-form wide layer + transition term chosen on validation, deep part trained)
    and distilled student, order-blind and order-aware, on the time-ordered leave-last-out protocol."""
    from freshrec.pipeline.evaluation.evaluate import evaluate_scorer
    from freshrec.pipeline.offline.ranking import torch_scorer
    from freshrec.pipeline.training import stages
    from freshrec.pipeline.training.ease import WideGrams
    from freshrec.pipeline.training.trainer import fit

    data = _sequential_data(tmp_path)
    n = data.vocab.n_items
    results = {}
    for window in (0, 8):
        settings = Settings(training={"order_window": window})
        grams = WideGrams(data.fit, data.fit_times or None, n, stages.WIDE_DEFAULT.session_tau_s, None)
        wide, _ = stages.choose_wide(grams, data, window)
        assert (wide.follow_scale > 0) == bool(window), "the transition term must win validation on a sequential world"
        teacher = stages.teacher_for(data, data.fit, data.fit_times, wide, None, {}, grams, order_window=window)
        fit(teacher, data.fit, data.validation, stages.fit_config(settings, data, 2, stages.TEACHER_FIT), "cpu")
        notes: dict = {}
        student = stages.student_for(data, None, notes, teacher.eval(), window)
        fit(student, data.fit, data.validation, stages.fit_config(settings, data, 6, stages.STUDENT_FIT), "cpu", teacher)
        for name, model in (("teacher", teacher), ("student", student.eval())):
            results[name, window] = evaluate_scorer(torch_scorer(model, "cpu"), data.test, n)["overall"]["ndcg@10"]
        if window:
            assert "successors" in notes
    for name in ("teacher", "student"):
        assert results[name, 8] > 1.5 * results[name, 0], results
    assert results["student", 8] > 0.85 * results["teacher", 8], results
