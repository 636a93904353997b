"""Release gates for a candidate, evaluated on the run's holdout. Pure: metrics in, verdict out.

1. absolute floor: served (int8) nDCG@10 >= settings.gates.min_ndcg_at_10;
2. no regression: served nDCG@10 >= champion nDCG@10 x (1 - max_regression), same holdout;
3. int8 fidelity: int8 nDCG@10 >= fp32 nDCG@10 x (1 - int8_max_loss), both measured on the fidelity set
   (holdout or validation split, whichever ranks more users; max score difference reported);
4. export parity: torch vs ORT fp32 scores agree within PARITY_TOLERANCE.

Gates 1-4 judge the holdout-trained models. When the served models are refitted on all interactions
after that (``training.refit_on_all``), their graphs pass the checks that need no holdout too:
5. served int8 fidelity: the refit's int8 vs its fp32, paired on the same fidelity set, as gate 3;
6. served export parity: torch vs ORT fp32 of the refitted teacher and student, as gate 4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PARITY_TOLERANCE = 1e-3


@dataclass
class GateResult:
    name: str
    passed: bool
    detail: str
    evidence: dict = field(default_factory=dict)


@dataclass
class Verdict:
    passed: bool
    gates: list[GateResult]

    @property
    def reasons(self) -> list[str]:
        return [f"{g.name}: {g.detail}" for g in self.gates if not g.passed]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "gates": [asdict(g) for g in self.gates], "reasons": self.reasons}


def floor_gate(int8_ndcg: float, floor: float) -> GateResult:
    ok = int8_ndcg >= floor
    return GateResult("floor", ok, f"int8 nDCG@10 {int8_ndcg:.4f} {'>=' if ok else '<'} floor {floor:.4f}",
                      {"int8_ndcg@10": int8_ndcg, "floor": floor})


def regression_gate(int8_ndcg: float, champion_ndcg: float | None, max_regression: float) -> GateResult:
    if champion_ndcg is None:
        return GateResult("champion_regression", True, "no champion to compare with", {})
    bound = champion_ndcg * (1.0 - max_regression)
    ok = int8_ndcg >= bound
    return GateResult(
        "champion_regression", ok,
        f"int8 nDCG@10 {int8_ndcg:.4f} vs champion {champion_ndcg:.4f} (bound {bound:.4f}, {max_regression:.1%} allowed)",
        {"int8_ndcg@10": int8_ndcg, "champion_ndcg@10": champion_ndcg, "bound": bound},
    )


def int8_gate(int8_ndcg: float, fp32_ndcg: float, max_loss: float, max_abs_diff: float) -> GateResult:
    bound = fp32_ndcg * (1.0 - max_loss)
    ok = int8_ndcg >= bound
    return GateResult(
        "int8_fidelity", ok,
        f"int8 nDCG@10 {int8_ndcg:.4f} vs fp32 {fp32_ndcg:.4f} (bound {bound:.4f}); max score diff {max_abs_diff:.4g}",
        {"int8_ndcg@10": int8_ndcg, "fp32_ndcg@10": fp32_ndcg, "bound": bound, "max_abs_diff": max_abs_diff},
    )


def parity_gate(max_abs_diffs: dict[str, float], tolerance: float = PARITY_TOLERANCE) -> GateResult:
    worst = max(max_abs_diffs.values()) if max_abs_diffs else 0.0
    ok = worst <= tolerance
    return GateResult("export_parity", ok, f"torch vs ORT fp32 max |diff| {worst:.3g} (tolerance {tolerance:g})",
                      {"max_abs_diff": max_abs_diffs, "tolerance": tolerance})


def served_gates(fidelity: tuple[float, float], int8_max_abs_diff: float, parity: dict[str, float],
                 int8_max_loss: float) -> list[GateResult]:
    """Gates 5 and 6 for the graphs refitted on all interactions (``fidelity`` = (int8, fp32) nDCG@10)."""
    int8 = int8_gate(fidelity[0], fidelity[1], int8_max_loss, int8_max_abs_diff)
    exported = parity_gate(parity)
    return [
        GateResult("served_int8_fidelity", int8.passed, f"refit on all data: {int8.detail}", int8.evidence),
        GateResult("served_export_parity", exported.passed, f"refit on all data: {exported.detail}", exported.evidence),
    ]


def with_gates(verdict: dict, extra: list[GateResult]) -> Verdict:
    """``verdict`` (as written by :meth:`Verdict.to_dict`) plus ``extra``, replacing gates of the same name."""
    names = {g.name for g in extra}
    gates = [GateResult(**g) for g in verdict["gates"] if g["name"] not in names] + list(extra)
    return Verdict(all(g.passed for g in gates), gates)


def decide(
    int8_ndcg: float,
    fidelity: tuple[float, float],
    int8_max_abs_diff: float,
    champion_ndcg: float | None,
    parity: dict[str, float],
    floor: float,
    max_regression: float,
    int8_max_loss: float,
) -> Verdict:
    """``fidelity`` is (int8, fp32) nDCG@10 on the fidelity set; ``int8_ndcg`` is on the holdout."""
    gates = [
        floor_gate(int8_ndcg, floor),
        regression_gate(int8_ndcg, champion_ndcg, max_regression),
        int8_gate(fidelity[0], fidelity[1], int8_max_loss, int8_max_abs_diff),
        parity_gate(parity),
    ]
    return Verdict(all(g.passed for g in gates), gates)
