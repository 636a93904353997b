"""Export: torch vs ONNX Runtime parity with dynamic shapes, int8/fp16 variants, and the int8 gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from freshrec.core.artifacts import RunLayout
from freshrec.pipeline.export.quantize import RECIPES

pytestmark = pytest.mark.slow
FAST_RECIPES = tuple(r for r in RECIPES if r.name in ("dynamic", "dynamic_reduce_range", "static_qdq"))


@pytest.fixture(scope="module")
def exported_run(trained_run: Path) -> Path:
    from freshrec.pipeline.export.stage import check_parity, export_run

    export_run(trained_run, int8_max_loss=0.01, recipes=FAST_RECIPES)
    check_parity(trained_run)
    return trained_run


def _model(run: Path, name: str):
    from freshrec.pipeline.training import prepare as prep
    from freshrec.pipeline.training.checkpoint import load_checkpoint

    data = prep.load(RunLayout(run).training_set)
    return load_checkpoint(RunLayout(run).served_checkpoint(name), torch.from_numpy(data.categories))[0], data


@pytest.mark.parametrize("name", ["student", "teacher"])
@pytest.mark.parametrize("batch,history_len,n_candidates", [(1, 1, 1), (3, 17, 32), (2, 300, 5)])
def test_torch_and_onnx_agree_for_any_shape(exported_run: Path, name: str, batch: int, history_len: int, n_candidates: int) -> None:
    from freshrec.pipeline.export.onnx_export import run_scores, session

    model, data = _model(exported_run, name)
    rng = np.random.default_rng(batch * 1000 + history_len)
    history = rng.integers(0, data.vocab.n_items + 1, size=(batch, history_len), dtype=np.int64)
    candidates = rng.integers(1, data.vocab.n_items + 1, size=(batch, n_candidates), dtype=np.int64)
    with torch.no_grad():
        expected = model(torch.from_numpy(history), torch.from_numpy(candidates)).numpy()
    got = run_scores(session(exported_run / f"{name}.fp32.onnx"), history, candidates)
    assert got.shape == (batch, n_candidates) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_variants_follow_the_signature_and_parity_is_recorded(exported_run: Path) -> None:
    from freshrec.pipeline.export.onnx_export import check_onnx, run_scores, session

    for name in ("student.fp32.onnx", "student.int8.onnx", "student.fp16.onnx", "teacher.fp32.onnx"):
        check_onnx(exported_run / name)
    int8 = onnx.load(str(exported_run / "student.int8.onnx"))
    assert any(init.data_type == onnx.TensorProto.INT8 for init in int8.graph.initializer), "int8 graph holds no int8 weights"
    parity = json.loads(RunLayout(exported_run).parity.read_text())
    assert parity["student"]["max_abs_diff"] < 1e-4 and parity["teacher"]["max_abs_diff"] < 1e-3
    history = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64)
    candidates = np.array([[1, 2], [3, 4]], dtype=np.int64)
    fp32 = run_scores(session(exported_run / "student.fp32.onnx"), history, candidates)
    fp16 = run_scores(session(exported_run / "student.fp16.onnx"), history, candidates)
    np.testing.assert_allclose(fp16, fp32, atol=5e-2)
    report = json.loads(RunLayout(exported_run).export_report.read_text())
    assert {t["recipe"]["name"] for t in report["int8_trials"]} == {r.name for r in FAST_RECIPES}
    assert report["int8"]["recipe"]["name"] in {r.name for r in FAST_RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_an_int8_users_scores_do_not_depend_on_their_batch_mates(exported_run: Path, tmp_path: Path, recipe,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving micro-batches concurrent requests: a row's scores must be those it gets alone. ORT's dynamic
    quantisation has one activation scale per batch (0.02 apart here before row_activations); every recipe
    must be batch-invariant."""
    from freshrec.pipeline.export import quantize
    from freshrec.pipeline.export.onnx_export import run_scores, session
    from freshrec.pipeline.export.quantize import HistoryCalibration, quantise_int8

    model, data = _model(exported_run, "student")
    n_items = data.vocab.n_items
    rng = np.random.default_rng(3)
    history = rng.integers(0, n_items + 1, size=(24, 9), dtype=np.int64)
    candidates = np.ascontiguousarray(np.broadcast_to(np.arange(1, n_items + 1, dtype=np.int64), (24, n_items)))
    graph = quantise_int8(exported_run / "student.fp32.onnx", tmp_path / "int8.onnx", recipe,
                          HistoryCalibration(history, n_items))
    scorer = session(graph)
    together = run_scores(scorer, history, candidates)
    alone = np.concatenate([run_scores(scorer, history[i : i + 1], candidates[i : i + 1]) for i in range(len(history))])
    np.testing.assert_array_equal(together, alone)
    if not recipe.static:  # a request alone gets what ORT's own per-tensor quantisation gives a batch of one
        monkeypatch.setattr(quantize, "per_row_activations", lambda model: 0)
        plain = session(quantise_int8(exported_run / "student.fp32.onnx", tmp_path / "plain.onnx", recipe))
        as_before = np.concatenate([run_scores(plain, history[i : i + 1], candidates[i : i + 1]) for i in range(len(history))])
        np.testing.assert_allclose(alone, as_before, rtol=0, atol=1e-5)
    with torch.no_grad():
        expected = model(torch.from_numpy(history), torch.from_numpy(candidates)).numpy()
    top = np.argsort(-expected, axis=1)[:, :3]
    # Still a quantisation of the same model: each row's top-3 items keep most of their places.
    assert (np.argsort(-together, axis=1)[:, :3] == top).mean() >= 0.6


def test_a_kept_pruned_student_is_exports_own_checkpoint(exported_run: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Export never writes into training's folder: a kept pruned student is saved as export's checkpoint (the
    weights of the student graphs, checksummed in the bundle) and training's student stays as trained."""
    from freshrec.core.registry import sha256_file
    from freshrec.pipeline.export import stage
    from freshrec.pipeline.export.bundle import file_facts
    from freshrec.pipeline.export.pruning import pruned_variant
    from freshrec.pipeline.training.checkpoint import read_checkpoint

    shutil.copytree(exported_run.parents[1], tmp_path / "home")
    run = tmp_path / "home" / "models" / exported_run.name
    paths = RunLayout(run)
    trained = sha256_file(paths.checkpoint("student"))
    assert paths.served_checkpoint("student") == paths.checkpoint("student")  # nothing pruned on the tiny holdout

    def keep_structured(run_dir, student, baseline, export, history_len, max_loss):
        return {"kept": "structured_half_dims", "model": pruned_variant("structured_half_dims", student), "trials": []}

    monkeypatch.setattr(stage, "evaluate_pruning", keep_structured)
    stage.export_run(run, int8_max_loss=0.01, recipes=FAST_RECIPES[:1], fp16=False)
    stage.check_parity(run)
    assert sha256_file(paths.checkpoint("student")) == trained
    assert paths.served_checkpoint("student") == paths.export_checkpoint("student") == run / "work" / "export" / "student.safetensors"
    exported = read_checkpoint(paths.export_checkpoint("student"))
    assert exported["pruned"] == "structured_half_dims"
    assert exported["config"]["dim"] == read_checkpoint(paths.checkpoint("student"))["config"]["dim"] // 2
    assert json.loads(paths.parity.read_text())["student"]["max_abs_diff"] < 1e-4  # the graph's weights are export's
    assert "work/export/student.safetensors" in file_facts(run)

    monkeypatch.setattr(stage, "evaluate_pruning", lambda *args: {"kept": None, "model": None, "trials": []})
    stage.export_run(run, int8_max_loss=0.01, recipes=FAST_RECIPES[:1], fp16=False)  # a retry that keeps nothing
    assert not paths.export_checkpoint("student").exists() and paths.served_checkpoint("student") == paths.checkpoint("student")


def _trial(name: str, ndcg: float, cpu_ms: float, size: int, row_tables: bool = False) -> dict:
    return {"recipe": {"name": name, "row_tables": row_tables}, "fidelity_ndcg@10": ndcg,
            "latency": {"cpu_p50_ms": cpu_ms}, "size": size}


def test_choose_recipe_prefers_accuracy_among_the_fast_recipes_within_tolerance() -> None:
    from freshrec.pipeline.export.stage import choose_recipe

    small_lossy = _trial("small", 0.3184, 0.040, 100)  # inside a 1% bound of 0.3215 by a hair
    accurate = _trial("accurate", 0.3211, 0.041, 140)
    slow_best = _trial("slow", 0.3214, 0.080, 140)      # most accurate, but twice the CPU time
    outside = _trial("outside", 0.3100, 0.020, 90)      # fastest and smallest, beyond the bound
    trials = [small_lossy, accurate, slow_best, outside]
    assert choose_recipe(trials, fp32_ndcg=0.3215, max_loss=0.01)["recipe"]["name"] == "accurate"
    tie = _trial("tie_small", 0.3211, 0.041, 120)
    assert choose_recipe([*trials, tie], 0.3215, 0.01)["recipe"]["name"] == "tie_small"
    # none within the bound: the most accurate, whatever its speed (the int8 gate then rejects it)
    assert choose_recipe([outside, _trial("b", 0.3150, 0.1, 1)], 0.3215, 0.001)["recipe"]["name"] == "b"


def test_choose_recipe_prefers_a_per_row_int8_table_within_a_quarter_percent_never_a_per_table_one() -> None:
    from freshrec.pipeline.export.stage import choose_recipe

    full_tables = _trial("full_tables", 0.3211, 0.041, 281_000)
    per_table = _trial("per_table", 0.3197, 0.043, 137_000)  # half the size, 0.44% less accurate: the refit's margin
    assert choose_recipe([full_tables, per_table], 0.3215, 0.01)["recipe"]["name"] == "full_tables"
    close_row = _trial("close_row", 0.3205, 0.048, 141_000, row_tables=True)  # 0.19% below the best: preferred
    assert choose_recipe([full_tables, per_table, close_row], 0.3215, 0.01)["recipe"]["name"] == "close_row"
    far_row = _trial("far_row", 0.3199, 0.048, 141_000, row_tables=True)  # 0.37% below: accuracy first
    assert choose_recipe([full_tables, per_table, far_row], 0.3215, 0.01)["recipe"]["name"] == "full_tables"
    slow_row = _trial("slow_row", 0.3211, 0.060, 141_000, row_tables=True)  # beyond the latency slack
    assert choose_recipe([full_tables, slow_row], 0.3215, 0.01)["recipe"]["name"] == "full_tables"


def _flip_weight_scales(path: Path) -> None:
    """A quantiser bug: every weight scale gets the wrong sign, so every ranking turns upside down."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name.endswith("_scale") and init.data_type == onnx.TensorProto.FLOAT:
            values = onnx.numpy_helper.to_array(init) * -1.0
            init.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), init.name))
    onnx.save(model, str(path))


def test_gate_rejects_a_broken_int8_model(exported_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from freshrec.core.registry import open_registry
    from freshrec.pipeline.export import stage
    from freshrec.pipeline.export.publish import apply_gates, publish
    from tests.export.conftest import tiny_settings

    run = tmp_path / "home" / "models" / "broken"
    shutil.copytree(exported_run.parents[1], tmp_path / "home")  # the whole home: data, lake, run
    run = tmp_path / "home" / "models" / exported_run.name
    real = stage.quantise_int8

    def broken_quantiser(fp32, target, recipe, calibration=None):
        real(fp32, target, recipe, calibration)
        _flip_weight_scales(target)
        return target

    monkeypatch.setattr(stage, "quantise_int8", broken_quantiser)
    stage.export_run(run, int8_max_loss=0.01, recipes=FAST_RECIPES)
    stage.check_parity(run)
    settings = tiny_settings(tmp_path / "home")
    verdict = json.loads(apply_gates(settings, run).read_text())
    assert not verdict["passed"]
    failed = {g["name"] for g in verdict["gates"] if not g["passed"]}
    assert "int8_fidelity" in failed and "export_parity" not in failed
    with open_registry(settings) as registry:
        outcome = publish(settings, registry, run, dag_run_id="test", parent_version=None)
        version = registry.get_version(outcome["version"])
    assert outcome["state"] == "rejected" and version.state == "rejected"
    assert any("int8_fidelity" in reason for reason in version.reasons)
    assert registry.serving_state().champion is None


@pytest.fixture(scope="module")
def served_run(exported_run: Path, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the exported home, gated, refitted on all interactions and exported again as served graphs.
    Returns the run and the sha256 of its gated int8 student."""
    from freshrec.core.registry import sha256_file
    from freshrec.pipeline.export.publish import apply_gates, apply_served_gates
    from freshrec.pipeline.export.stage import export_served
    from freshrec.pipeline.training.stages import refit_on_all
    from tests.export.conftest import tiny_settings

    home = tmp_path_factory.mktemp("served") / "home"
    shutil.copytree(exported_run.parents[1], home)
    run = home / "models" / exported_run.name
    gated_int8 = sha256_file(run / "student.int8.onnx")
    settings = tiny_settings(home)
    apply_gates(settings, run)
    refit_on_all(settings, run)
    export_served(run, int8_max_loss=settings.gates.int8_max_loss)
    apply_served_gates(settings, run)
    return run, gated_int8


def test_served_graphs_are_the_refit_and_the_gated_int8_stays_for_comparisons(served_run: tuple[Path, str]) -> None:
    from freshrec.core.registry import open_registry, sha256_file
    from freshrec.pipeline.export.bundle import verify_bundle
    from freshrec.pipeline.export.onnx_export import check_onnx, run_scores, session
    from freshrec.pipeline.export.publish import publish
    from tests.export.conftest import tiny_settings

    run, gated_int8 = served_run
    assert sha256_file(run / "student.eval.int8.onnx") == gated_int8
    assert sha256_file(run / "student.int8.onnx") != gated_int8
    for name in ("student.fp32.onnx", "student.int8.onnx", "student.fp16.onnx", "teacher.fp32.onnx", "student.eval.int8.onnx"):
        check_onnx(run / name)
    served = json.loads(RunLayout(run).served_export.read_text())
    gated = json.loads(RunLayout(run).export_report.read_text())
    # The gated recipe first; another only when it lost more than the int8 gate allows on the refit.
    tried = served["int8_recipes_tried"]
    assert tried[0]["recipe"] == gated["int8"]["recipe"]["name"]
    assert [t["fidelity_ndcg@10"] >= t["floor"] for t in tried[:-1]] == [False] * (len(tried) - 1)
    assert served["int8"]["recipe"]["name"] == tried[-1]["recipe"] or not any(t["fidelity_ndcg@10"] >= t["floor"] for t in tried)
    assert served["parity"]["student"]["max_abs_diff"] < 1e-4 and served["parity"]["teacher"]["max_abs_diff"] < 1e-3
    model, data = _model(run, "student")  # student.safetensors is now the refit
    history = data.test.histories[:4]
    candidates = np.tile(np.arange(1, data.vocab.n_items + 1, dtype=np.int64), (len(history), 1))
    with torch.no_grad():
        expected = model(torch.from_numpy(history), torch.from_numpy(candidates)).numpy()
    np.testing.assert_allclose(run_scores(session(run / "student.fp32.onnx"), history, candidates), expected, rtol=1e-4, atol=1e-4)
    verdict = json.loads(RunLayout(run).gates.read_text())
    names = [g["name"] for g in verdict["gates"]]
    assert names[-2:] == ["served_int8_fidelity", "served_export_parity"] and names.count("served_int8_fidelity") == 1
    assert next(g for g in verdict["gates"] if g["name"] == "served_export_parity")["passed"]

    settings = tiny_settings(run.parents[1])
    with open_registry(settings) as registry:
        outcome = publish(settings, registry, run, dag_run_id="test", parent_version=None)
        version = registry.get_version(outcome["version"])
    assert verify_bundle(run) == []
    assert "student.eval.int8.onnx" in (run / "SHA256SUMS").read_text()
    assert Path(version.artifacts["int8"].uri).name == "student.int8.onnx"
    card = version.card
    trained = card["training_data"]
    assert trained["served_model"]["rows"] == data.parts["all"]["rows"] > trained["holdout_trained_model"]["rows"]
    assert trained["served_model"]["last_ts"] > trained["holdout_trained_model"]["last_ts"]
    assert version.lineage["training_data"] == trained
    assert "student.eval.int8.onnx" in card["metrics"]["metrics_from"]
    assert card["refit_on_all"]["student"]["user_item_pairs"] == data.parts["all"]["user_item_pairs"]


def test_a_refit_that_the_gated_recipe_quantises_badly_is_served_with_the_next_recipe_that_keeps_it(
    served_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe chosen on the gated student is tried first on the refit; when its int8 falls below the int8
    gate's floor there, the gated export's next recipe (most accurate first) is served, and every try is kept."""
    from freshrec.pipeline.export import stage
    from freshrec.pipeline.export.quantize import HistoryCalibration
    from freshrec.pipeline.training import prepare as prep
    from freshrec.pipeline.training.dataset import pad_histories

    run, _ = served_run
    gated = json.loads(RunLayout(run).export_report.read_text())
    recipes = stage.served_recipes(gated)
    assert recipes[0].to_dict() == gated["int8"]["recipe"] and len(recipes) == len(FAST_RECIPES)
    assert len({r.name for r in recipes}) == len(recipes)
    data = prep.load(RunLayout(run).training_set)
    calibration = HistoryCalibration(pad_histories(list(data.full.values())[:64], data.history_len), data.vocab.n_items)
    fp32, target = run / "student.fp32.onnx", tmp_path / "student.int8.onnx"
    floor = stage.evaluate_graph(run, fp32, fidelity=True)["overall"]["ndcg@10"] * 0.99
    real = stage.quantise_int8

    def first_recipe_broken(fp32_path, out, recipe, calibration=None):
        real(fp32_path, out, recipe, calibration)
        if recipe.name == recipes[0].name:
            _flip_weight_scales(out)
        return out

    monkeypatch.setattr(stage, "quantise_int8", first_recipe_broken)
    chosen, tried = stage.quantise_served(run, fp32, target, recipes, calibration, floor)
    assert tried[0]["recipe"] == recipes[0].name and tried[0]["fidelity_ndcg@10"] < floor
    assert chosen.name != recipes[0].name and tried[-1]["recipe"] == chosen.name and tried[-1]["fidelity_ndcg@10"] >= floor
    assert stage.evaluate_graph(run, target, fidelity=True)["overall"]["ndcg@10"] == tried[-1]["fidelity_ndcg@10"]

    # No recipe reaches an unreachable floor: the most accurate try is what stays in the target.
    chosen, tried = stage.quantise_served(run, fp32, target, recipes, calibration, floor=2.0)
    assert len(tried) == len(recipes)
    best = max(tried, key=lambda t: t["fidelity_ndcg@10"])
    assert chosen.name == best["recipe"]
    assert stage.evaluate_graph(run, target, fidelity=True)["overall"]["ndcg@10"] == best["fidelity_ndcg@10"]
