"""``freshrec bench export``: ONNX Runtime teacher fp32 / student fp32 / student int8 vs torch eager teacher.

For 1..1024 candidates per call: single-request latency (batch 1, p50/p99) and throughput (batch 32,
requests/s), one thread each, with a full-length history (settings.data.online_history_length). Sizes
of every artifact. Uses the champion's bundle (else the newest complete bundle). JSON + PNG under
reports/bench/.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from freshrec.errors import NotFound  # noqa: E402
from freshrec.layout import Layout  # noqa: E402
from freshrec.schemas import BUNDLE_VOCAB  # noqa: E402
from freshrec.settings import Settings  # noqa: E402
from tasks.export.latency import onnx_latency, torch_latency  # noqa: E402
from tasks.training.checkpoint import load_checkpoint  # noqa: E402
from tasks.training.dataset import Vocab  # noqa: E402
from tasks.training.models import flops_per_request  # noqa: E402

DEFAULT_CANDIDATES = [1, 16, 64, 256, 1024]
THROUGHPUT_BATCH = 32
GRAPHS = {"teacher_fp32": "teacher.fp32.onnx", "student_fp32": "student.fp32.onnx", "student_int8": "student.int8.onnx"}
console = Console()


def find_bundle(settings: Settings) -> Path:
    from freshrec.registry import open_registry

    with open_registry(settings) as registry:
        champion = registry.serving_state().champion
    if champion is not None:
        return Path(champion.bundle_dir)
    complete = [d for d in Layout(settings.home).models.glob("*") if all((d / f).is_file() for f in GRAPHS.values())]
    if not complete:
        raise NotFound("no model bundle to benchmark; run `freshrec pipeline run` first")
    return max(complete, key=lambda d: d.stat().st_mtime)


def measure(bundle: Path, candidates: list[int], history_len: int) -> dict:
    n_items = Vocab.load(bundle / BUNDLE_VOCAB).n_items
    teacher, _ = load_checkpoint(bundle / "teacher.pt")
    student, _ = load_checkpoint(bundle / "student.pt")
    rows: list[dict] = []
    for c in candidates:
        for name, file in GRAPHS.items():
            single = onnx_latency(bundle / file, n_items, history_len, c)
            batch = onnx_latency(bundle / file, n_items, history_len, c, batch=THROUGHPUT_BATCH, min_calls=10)
            rows.append(_row(name, "onnxruntime", c, single, batch))
        single = torch_latency(teacher, n_items, history_len, c)
        batch = torch_latency(teacher, n_items, history_len, c, batch=THROUGHPUT_BATCH, min_calls=10)
        rows.append(_row("teacher_torch_eager", "torch", c, single, batch))
        console.print(f"candidates {c}: " + ", ".join(f"{r['model']} {r['p50_ms']:.3f} ms" for r in rows if r["candidates"] == c))
    return {
        "bundle": str(bundle),
        "n_items": n_items,
        "history_len": history_len,
        "throughput_batch": THROUGHPUT_BATCH,
        "threads": 1,
        "machine": {"cpu": platform.processor() or platform.machine(), "onnxruntime": ort.__version__, "torch": torch.__version__},
        "sizes_bytes": {f: (bundle / f).stat().st_size for f in [*GRAPHS.values(), "student.fp16.onnx"] if (bundle / f).is_file()},
        "flops_per_request": {
            "teacher": flops_per_request(teacher, history_len, n_items),
            "student": flops_per_request(student, history_len, n_items),
        },
        "results": rows,
        "int8_speedup_vs_fp32": _speedups(rows),
    }


def _row(model: str, runtime: str, candidates: int, single: dict, batch: dict) -> dict:
    return {
        "model": model, "runtime": runtime, "candidates": candidates,
        "p50_ms": single["p50_ms"], "p99_ms": single["p99_ms"],
        "throughput_rps": THROUGHPUT_BATCH * 1000.0 / batch["mean_ms"],
    }


def _speedups(rows: list[dict]) -> dict:
    by = {(r["model"], r["candidates"]): r for r in rows}
    out = {}
    for (model, c), row in by.items():
        if model == "student_int8":
            fp32 = by[("student_fp32", c)]
            out[str(c)] = {"latency": fp32["p50_ms"] / row["p50_ms"], "throughput": row["throughput_rps"] / fp32["throughput_rps"]}
    return out


def plot(report: dict, target: Path) -> Path:
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(13, 5))
    for model in dict.fromkeys(r["model"] for r in report["results"]):
        rows = [r for r in report["results"] if r["model"] == model]
        xs = [r["candidates"] for r in rows]
        lat.plot(xs, [r["p50_ms"] for r in rows], marker="o", label=model)
        thr.plot(xs, [r["throughput_rps"] for r in rows], marker="o", label=model)
    for ax, title in ((lat, "p50 latency, batch 1 (ms)"), (thr, f"throughput, batch {THROUGHPUT_BATCH} (req/s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("candidates per call")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"1 thread, history {report['history_len']}, catalogue {report['n_items']}")
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def run(settings: Settings, candidates: list[int] | None = None) -> Path:
    bundle = find_bundle(settings)
    report = measure(bundle, sorted(candidates or DEFAULT_CANDIDATES), settings.data.online_history_length)
    folder = Layout(settings.home).reports / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "export.json"
    out.write_text(json.dumps(report, indent=2))
    plot(report, folder / "export.png")
    return out
