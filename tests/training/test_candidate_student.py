"""The student's retrieval forms: scored on its candidates only (CandidateStudent) it gives the scores of the whole
catalogue's graph; its user tower's query against the item keys is the factorised part of those scores, and the
tower names the items the sparse terms score exactly."""

from __future__ import annotations

import torch

from freshrec.pipeline.training.models import CandidateStudent, Student, StudentConfig, UserTower, item_keys

N_ITEMS = 300


def _student(order_window: int, neighbours: int) -> Student:
    torch.manual_seed(0)
    model = Student(StudentConfig(n_items=N_ITEMS, dim=16, hidden=32, order_window=order_window, successors=8,
                                  neighbours=neighbours)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dtype.is_floating_point:
                param.normal_(0, 0.3)
        dense = torch.randn(N_ITEMS + 1, N_ITEMS + 1)
        if model.successor_ids is not None:
            model.init_successors(dense)
        model.init_from_item_matrix(dense.t())  # the factors, and the neighbour table from what they miss
    return model


def _histories() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    history = torch.randint(1, N_ITEMS + 1, (5, 12), generator=generator)
    history[0, :7] = 0  # a short history, right-aligned
    return history


def test_candidate_scores_equal_the_catalogue_graph():
    history = _histories()
    generator = torch.Generator().manual_seed(2)
    candidates = torch.randint(1, N_ITEMS + 1, (5, 40), generator=generator)
    candidates[:, 0] = history[:, -1]  # the newest item's own column, where sparse terms land too
    for window, neighbours in ((0, 0), (4, 0), (0, 6), (4, 6)):
        student = _student(window, neighbours)
        with torch.no_grad():
            expected = student(history, candidates)
            got = CandidateStudent(student)(history, candidates)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_tower_query_and_keys_give_the_factorised_scores_and_name_the_sparse_items():
    history = _histories()
    student = _student(4, 6)
    with torch.no_grad():
        query, extra = UserTower(student)(history)
        keys = item_keys(student)
        logits = student.catalogue_logits(history)
        dense = student.user_vector(history) @ student.item_out + student.item_bias
    assert query.shape == (5, 17) and keys.shape == (N_ITEMS, 17)
    torch.testing.assert_close(query @ keys.t(), dense[:, 1:], rtol=1e-4, atol=1e-4)
    # Every item whose score the sparse terms change is among the tower's extra ids.
    for row in range(history.shape[0]):
        changed = set(torch.nonzero((logits[row] - dense[row]).abs() > 1e-6).flatten().tolist())
        assert changed and changed <= set(extra[row].tolist())


def test_an_order_blind_student_without_neighbours_names_no_extra_items():
    history = _histories()
    with torch.no_grad():
        _, extra = UserTower(_student(0, 0))(history)
    assert extra.shape == (5, 1) and not extra.any()
