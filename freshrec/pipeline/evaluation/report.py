"""The evaluation report of a retrain run: JSON + PNG under reports/retrain/<run id>/.

Models side by side (teacher, distilled student, int8 student, control, champion; all users and the
cold-user slice) and the early-stopping curves (validation nDCG@10 per epoch). Every holdout metric is
of the holdout-trained models; ``training_data`` says what the served model learnt from, and
``served_refit`` holds the checks of the refit on all interactions when there was one.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from freshrec.core.artifacts import (  # noqa: E402
    EvalReport,
    ExportReport,
    GateVerdict,
    RunLayout,
    ServedExportReport,
    read_artifact,
)
from freshrec.core.layout import Layout  # noqa: E402
from freshrec.core.settings import Settings  # noqa: E402
from freshrec.pipeline.training import prepare as prep  # noqa: E402
from freshrec.pipeline.training.stages import read_training_summaries  # noqa: E402

SHOWN = ("ndcg@10", "recall@10", "precision@10", "map@10", "hr@10", "coverage@10")


def collect(run_dir: Path) -> dict:
    paths = RunLayout(run_dir)
    evaluation = read_artifact(paths.evaluation, EvalReport).model_dump()
    export = read_artifact(paths.export_report, ExportReport).model_dump()
    refit = json.loads(paths.refit.read_text()) if paths.refit.is_file() else None
    served = read_artifact(paths.served_export, ServedExportReport).model_dump() if paths.served_export.is_file() else None
    models = dict(evaluation["models"])
    models["student_fp32_onnx"] = export["student_fp32"]["metrics"]
    models["student_int8_onnx"] = export["int8"]["metrics"]
    return {
        "run_id": run_dir.name,
        "protocol": evaluation["protocol"],
        "cutoff": evaluation.get("cutoff"),
        "counts": evaluation["counts"],
        "models": models,
        "comparisons": evaluation.get("comparisons", {}),
        "int8": {k: export["int8"][k] for k in ("recipe", "ndcg@10", "max_abs_diff_vs_fp32", "latency", "size")},
        "int8_trials": [{k: t.get(k) for k in ("recipe", "ndcg@10", "max_abs_diff_vs_fp32", "latency", "size", "error")}
                        for t in export["int8_trials"]],
        "gates": read_artifact(paths.gates, GateVerdict).model_dump() if paths.gates.is_file() else None,
        "training": read_training_summaries(run_dir),
        "training_data": prep.training_data_facts(prep.load(paths.training_set), served_on_all=refit is not None and served is not None),
        "served_refit": None if refit is None else {
            "models": {name: {k: v for k, v in m.items() if k != "curve"} for name, m in refit["models"].items()},
            "checks": None if served is None else {k: served.get(k) for k in ("int8", "student_fp32", "parity")},
        },
    }


def plot(report: dict, target: Path) -> Path:
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(14, 5))
    names = list(report["models"])
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        values = [report["models"][name]["overall"].get(m, 0.0) for m in SHOWN]
        bars.bar([j + i * width for j in range(len(SHOWN))], values, width, label=name)
    bars.set_xticks([j + 0.4 - width / 2 for j in range(len(SHOWN))], SHOWN, rotation=20)
    bars.set_title(f"holdout ({report['protocol']}), all users, holdout-trained models")
    bars.legend(fontsize=8)
    plot_early_stopping(curves, [(name, summary.get("curve", []), "-") for name, summary in report["training"].items()])
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def plot_early_stopping(ax, series: list[tuple[str, list[dict], str]]) -> None:
    """Validation nDCG@10 per epoch of each (label, training curve, line style) on ``ax``."""
    for label, curve, style in series:
        points = [p for p in curve if "val_ndcg@10" in p]
        ax.plot([p["epoch"] for p in points], [p["val_ndcg@10"] for p in points], style, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation nDCG@10")
    ax.set_title("early stopping")
    ax.legend(fontsize=7)


def write_report(settings: Settings, run_dir: Path) -> Path:
    report = collect(run_dir)
    folder = Layout(settings.home).reports / "retrain" / run_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "report.json"
    out.write_text(json.dumps(report, indent=2))
    plot(report, folder / "report.png")
    return out
