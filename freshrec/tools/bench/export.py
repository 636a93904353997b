"""``freshrec bench export``: ONNX Runtime teacher fp32 / student fp32 / student int8 vs torch eager teacher.

For 1..1024 candidates per call: single-request latency (batch 1, p50/p99 wall and p50 CPU time of the
calling thread) and throughput (batch 32, requests/s), one thread each, with a full-length history
(settings.data.online_history_length). The variants are measured in interleaved rounds and each keeps its
best round, so a neighbour's burst on a shared machine hits all of them alike. Sizes of every artifact and
the CPU's int8-relevant instruction sets (VNNI/AMX or not: the int8 ceiling differs). Uses the champion's
bundle (else the newest complete bundle). JSON + PNG under reports/bench/.
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

from freshrec.core.accel import cpu_isa  # noqa: E402
from freshrec.core.artifacts import RunLayout  # noqa: E402
from freshrec.core.errors import NotFound  # noqa: E402
from freshrec.core.layout import Layout  # noqa: E402
from freshrec.core.schemas import BUNDLE_VOCAB  # noqa: E402
from freshrec.core.settings import Settings  # noqa: E402
from freshrec.pipeline.export.latency import onnx_latency, torch_latency  # noqa: E402
from freshrec.pipeline.training.checkpoint import load_checkpoint  # noqa: E402
from freshrec.pipeline.training.dataset import Vocab  # noqa: E402
from freshrec.pipeline.training.models import flops_per_request  # noqa: E402

DEFAULT_CANDIDATES = [1, 16, 64, 256, 1024]
THROUGHPUT_BATCH = 32
ROUNDS = 3
GRAPHS = {"teacher_fp32": "teacher.fp32.onnx", "student_fp32": "student.fp32.onnx", "student_int8": "student.int8.onnx"}
console = Console()


def find_bundle(settings: Settings) -> Path:
    from freshrec.core.registry import open_registry

    with open_registry(settings) as registry:
        champion = registry.serving_state().champion
    if champion is not None:
        return Path(champion.bundle_dir)
    complete = [d for d in Layout(settings.home).models.glob("*") if all((d / f).is_file() for f in GRAPHS.values())]
    if not complete:
        raise NotFound("no model bundle to benchmark; run `freshrec pipeline run` first")
    return max(complete, key=lambda d: d.stat().st_mtime)


def _best(rounds: list[dict]) -> dict:
    """The round with the lowest CPU time (the least disturbed one)."""
    return min(rounds, key=lambda r: (r["cpu_p50_ms"], r["p50_ms"]))


def measure(bundle: Path, candidates: list[int], history_len: int) -> dict:
    n_items = Vocab.load(bundle / BUNDLE_VOCAB).n_items
    teacher, _ = load_checkpoint(RunLayout(bundle).served_checkpoint("teacher"))
    student, _ = load_checkpoint(RunLayout(bundle).served_checkpoint("student"))
    rows: list[dict] = []
    for c in candidates:
        calls = {name: (lambda b, f=file, c=c, **kw: onnx_latency(bundle / f, n_items, history_len, c, batch=b, **kw))
                 for name, file in GRAPHS.items()}
        calls["teacher_torch_eager"] = lambda b, c=c, **kw: torch_latency(teacher, n_items, history_len, c, batch=b, **kw)
        single: dict[str, list[dict]] = {name: [] for name in calls}
        batch: dict[str, list[dict]] = {name: [] for name in calls}
        for _ in range(ROUNDS):
            for name, call in calls.items():
                single[name].append(call(1))
                batch[name].append(call(THROUGHPUT_BATCH, min_calls=10))
        for name in calls:
            runtime = "torch" if name.endswith("torch_eager") else "onnxruntime"
            rows.append(_row(name, runtime, c, _best(single[name]), _best(batch[name])))
        console.print(f"candidates {c}: " + ", ".join(f"{r['model']} {r['p50_ms']:.3f} ms ({r['cpu_p50_ms']:.3f} CPU)"
                                                      for r in rows if r["candidates"] == c))
    return {
        "bundle": str(bundle),
        "n_items": n_items,
        "history_len": history_len,
        "throughput_batch": THROUGHPUT_BATCH,
        "threads": 1,
        "rounds": ROUNDS,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_isa": cpu_isa(),
                    "onnxruntime": ort.__version__, "torch": torch.__version__},
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
        "p50_ms": single["p50_ms"], "p99_ms": single["p99_ms"], "cpu_p50_ms": single["cpu_p50_ms"],
        "throughput_rps": THROUGHPUT_BATCH * 1000.0 / batch["mean_ms"],
        "throughput_cpu_rps": THROUGHPUT_BATCH * 1000.0 / batch["cpu_p50_ms"],
    }


def _speedups(rows: list[dict]) -> dict:
    """int8 over fp32 per candidate count: single-request wall and CPU latency, batch throughput (wall, CPU)."""
    by = {(r["model"], r["candidates"]): r for r in rows}
    out = {}
    for (model, c), row in by.items():
        if model == "student_int8":
            fp32 = by[("student_fp32", c)]
            out[str(c)] = {
                "latency": fp32["p50_ms"] / row["p50_ms"],
                "latency_cpu": fp32["cpu_p50_ms"] / row["cpu_p50_ms"],
                "throughput": row["throughput_rps"] / fp32["throughput_rps"],
                "throughput_cpu": row["throughput_cpu_rps"] / fp32["throughput_cpu_rps"],
            }
    return out


def plot(report: dict, target: Path) -> Path:
    fig, (lat, thr, ratio) = plt.subplots(1, 3, figsize=(18, 5))
    for model in dict.fromkeys(r["model"] for r in report["results"]):
        rows = [r for r in report["results"] if r["model"] == model]
        xs = [r["candidates"] for r in rows]
        lat.plot(xs, [r["p50_ms"] for r in rows], marker="o", label=f"{model} wall")
        lat.plot(xs, [r["cpu_p50_ms"] for r in rows], marker=".", ls=":", label=f"{model} CPU")
        thr.plot(xs, [r["throughput_rps"] for r in rows], marker="o", label=model)
    speedups = report["int8_speedup_vs_fp32"]
    xs = [int(c) for c in speedups]
    for key, label in (("latency", "latency (wall)"), ("latency_cpu", "latency (CPU)"), ("throughput", "throughput (wall)"),
                       ("throughput_cpu", "throughput (CPU)")):
        ratio.plot(xs, [speedups[str(c)][key] for c in xs], marker="o", label=label)
    ratio.axhline(2.0, color="r", ls="--", label="goal 2x")
    ratio.axhline(1.0, color="k", lw=0.5)
    for ax, title in ((lat, "p50 latency, batch 1 (ms)"), (thr, f"throughput, batch {THROUGHPUT_BATCH} (req/s)"),
                      (ratio, "student int8 / fp32 speed-up")):
        ax.set_xscale("log", base=2)
        if ax is not ratio:
            ax.set_yscale("log")
        ax.set_xlabel("candidates per call")
        ax.set_title(title)
        ax.legend(fontsize=7)
    isa = report["machine"].get("cpu_isa", {})
    vnni = "VNNI/AMX" if any(isa.get(f) for f in ("avx512_vnni", "avx_vnni", "amx_int8")) else "no VNNI (AVX2 int8)"
    fig.suptitle(f"1 thread, history {report['history_len']}, catalogue {report['n_items']}, CPU: {vnni}")
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
