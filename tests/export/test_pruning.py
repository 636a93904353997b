"""Pruning transforms: structured pruning removes dimensions exactly, magnitude pruning zeroes weights."""

from __future__ import annotations

import torch

from freshrec.pipeline.export.pruning import magnitude_pruned, structurally_pruned
from freshrec.pipeline.training.models import Student, StudentConfig


def test_structured_pruning_drops_dead_dimensions_without_changing_scores() -> None:
    torch.manual_seed(0)
    student = Student(StudentConfig(n_items=20, dim=8, hidden=16)).eval()
    with torch.no_grad():  # dimensions 4..7 carry nothing: removing them must not change any score
        student.item_in.weight[:, 4:] = 0
        student.item_out[4:] = 0
        student.mlp[2].weight[4:] = 0
        student.mlp[2].bias[4:] = 0
        torch.nn.init.normal_(student.mlp[2].weight[:4])
    small = structurally_pruned(student, keep_dims=4)
    assert small.config.dim == 4
    history, candidates = torch.tensor([[0, 1, 5, 9], [2, 3, 4, 20]]), torch.tensor([[1, 2, 3], [7, 8, 20]])
    with torch.no_grad():
        torch.testing.assert_close(small(history, candidates), student(history, candidates))


def test_magnitude_pruning_zeroes_the_requested_share() -> None:
    torch.manual_seed(0)
    student = Student(StudentConfig(n_items=50, dim=8, hidden=16))
    pruned = magnitude_pruned(student, 0.5)
    share = (pruned.item_out == 0).float().mean().item()
    assert 0.45 <= share <= 0.55
    assert torch.equal(pruned.item_bias, student.item_bias)
    assert (student.item_out != 0).all()  # the original is untouched
