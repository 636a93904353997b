"""The student's neighbour table (StudentConfig.neighbours): what a rank-``dim`` factorisation of the teacher's
item-to-item layer misses most, per item, scored exactly over the whole history; it exports and quantises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from freshrec.pipeline.training.models import Student, StudentConfig, flops_per_request

N_ITEMS, DIM = 60, 6


def _item_matrix(seed: int = 0) -> torch.Tensor:
    """A full-rank item-to-item matrix (an EASE-like layer: zero diagonal, padding row and column 0)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(N_ITEMS + 1, N_ITEMS + 1)) * 0.1
    groups = np.arange(N_ITEMS + 1) % 6
    weights += groups[:, None] == groups[None, :]  # tastes: a low-rank part the factorisation keeps
    np.fill_diagonal(weights, 0.0)
    weights[0, :] = weights[:, 0] = 0.0
    return torch.from_numpy(weights)


def _students(neighbours: int) -> Student:
    student = Student(StudentConfig(n_items=N_ITEMS, dim=DIM, hidden=8, neighbours=neighbours))
    student.init_from_item_matrix(_item_matrix(), scale=2.0)
    return student.eval()


def test_the_neighbour_table_holds_the_largest_residuals_and_brings_the_student_closer_to_its_teacher() -> None:
    plain, tabled = _students(0), _students(8)
    assert plain.neighbour_ids is None and tabled.neighbour_ids is not None and tabled.neighbour_scores is not None
    target = 2.0 * _item_matrix()[1:].float()  # one-item histories: row i of the scaled matrix
    history = torch.arange(1, N_ITEMS + 1)[:, None]
    with torch.no_grad():
        errors = [float((model.catalogue_logits(history) - target).abs().mean()) for model in (plain, tabled)]
        residual = target - plain.catalogue_logits(history)
    assert errors[1] < 0.9 * errors[0]
    # the ids are each row's largest residuals and the scores those residuals; the padding row adds nothing
    expected = residual.topk(8, dim=1).values
    torch.testing.assert_close(tabled.neighbour_scores[1:], expected, atol=1e-4, rtol=1e-4)
    assert int(tabled.neighbour_ids[0].abs().sum()) == 0 and float(tabled.neighbour_scores[0].abs().sum()) == 0.0
    # a padded history scores like the same items unpadded, and the order of the items does not matter
    with torch.no_grad():
        padded = tabled.catalogue_logits(torch.tensor([[0, 0, 5, 9]]))[:, 1:]
        torch.testing.assert_close(padded, tabled.catalogue_logits(torch.tensor([[9, 5]]))[:, 1:])


def test_flops_count_the_neighbours_per_history_item() -> None:
    assert flops_per_request(_students(8), 20, N_ITEMS) - flops_per_request(_students(0), 20, N_ITEMS) == 2 * 20 * 8


def test_a_student_with_neighbours_exports_and_quantises_in_parity(tmp_path: Path) -> None:
    from freshrec.pipeline.export.onnx_export import run_scores, session
    from freshrec.pipeline.export.quantize import RECIPES, quantise_int8
    from freshrec.pipeline.export.stage import export_fp32

    models = {n: _students(n) for n in (0, 8)}
    graphs = {n: export_fp32(model, tmp_path / f"model{n}.onnx") for n, model in models.items()}
    candidates = torch.arange(1, N_ITEMS + 1).expand(3, N_ITEMS).contiguous()
    torch.manual_seed(0)
    for length in (1, 5, 12):
        history = torch.randint(1, N_ITEMS + 1, (3, length))
        history[0, : max(0, length - 2)] = 0
        with torch.no_grad():
            expected = {n: model(history, candidates).numpy() for n, model in models.items()}
        fp32 = run_scores(session(graphs[8]), history.numpy(), candidates.numpy())
        np.testing.assert_allclose(fp32, expected[8], atol=1e-4)
        for recipe in (r for r in RECIPES if r.name in ("dynamic", "dynamic_row_tables", "dynamic_embeddings")):
            errors = {}
            for n, graph in graphs.items():
                int8 = quantise_int8(graph, tmp_path / f"{recipe.name}{n}.onnx", recipe)
                errors[n] = np.abs(run_scores(session(int8), history.numpy(), candidates.numpy()) - expected[n])
            # the table's scores stay fp32 after the quantised product: it adds no int8 error of its own
            np.testing.assert_allclose(errors[8], errors[0], atol=1e-3, err_msg=recipe.name)


def test_the_fp16_graph_adds_its_tables_in_fp32_and_runs_on_the_cpu(tmp_path: Path) -> None:
    from freshrec.pipeline.export.onnx_export import run_scores, session
    from freshrec.pipeline.export.quantize import convert_fp16
    from freshrec.pipeline.export.stage import export_fp32

    model = Student(StudentConfig(n_items=N_ITEMS, dim=DIM, hidden=8, order_window=4, neighbours=8))
    model.init_from_item_matrix(_item_matrix(), scale=2.0)
    model.init_successors(torch.rand(N_ITEMS + 1, N_ITEMS + 1))
    fp32 = export_fp32(model.eval(), tmp_path / "model.onnx")
    fp16 = convert_fp16(fp32, tmp_path / "model.fp16.onnx")
    history = np.array([[0, 0, 3, 9, 14], [5, 6, 7, 8, 9]], dtype=np.int64)
    candidates = np.broadcast_to(np.arange(1, N_ITEMS + 1), (2, N_ITEMS)).copy()
    expected = run_scores(session(fp32), history, candidates)
    np.testing.assert_allclose(run_scores(session(fp16), history, candidates), expected, atol=0.02 * np.abs(expected).max())
