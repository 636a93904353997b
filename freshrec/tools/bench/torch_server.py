"""The baseline a user would otherwise write: FastAPI + the torch teacher, eager, one request at a time.

Same contract as ``/v1/recommend`` (cold start by popularity, seen items removed, top-k) so the load
generator drives it exactly like the ONNX Runtime tier. Run: ``python -m freshrec.tools.bench.torch_server``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq
import torch
from fastapi import FastAPI
from pydantic import BaseModel, Field

from freshrec.core.artifacts import RunLayout
from freshrec.pipeline.training.checkpoint import load_checkpoint


class RecommendRequest(BaseModel):
    user_id: str
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True


def create_app(bundle_dir: Path, snapshot_dir: Path, threads: int, device: str = "cpu") -> FastAPI:
    """``device`` "cuda" puts the model and every tensor on the GPU (what a user with a GPU would do)."""
    torch.set_num_threads(threads)
    model, _ = load_checkpoint(RunLayout(bundle_dir).served_checkpoint("teacher"))
    model.eval().to(device)
    items = json.loads((bundle_dir / "vocab.json").read_text())["items"]
    index = {item: i + 1 for i, item in enumerate(items)}
    users = pq.read_table(snapshot_dir / "users.parquet", columns=["user_id", "history", "seen"]).to_pylist()
    history = {u["user_id"]: torch.tensor([index[i] for i in u["history"] if i in index] or [0], device=device)
               for u in users}
    seen = {u["user_id"]: torch.tensor([index[i] for i in u["seen"] if i in index], dtype=torch.long, device=device)
            for u in users}
    popularity = pq.read_table(snapshot_dir / "items.parquet").to_pylist()
    popular = [p["item_id"] for p in sorted(popularity, key=lambda p: -p["popularity"]) if p["item_id"] in index]
    candidates = torch.arange(1, len(items) + 1, device=device).unsqueeze(0)
    app = FastAPI(title="torch-eager baseline")

    @app.post("/v1/recommend")
    def recommend(request: RecommendRequest) -> dict:
        if request.user_id not in history:
            top = [{"item_id": item, "score": 0.0} for item in popular[: request.k]]
        else:
            with torch.no_grad():
                scores = model(history[request.user_id].unsqueeze(0), candidates)[0]
            if request.exclude_seen:
                scores[seen[request.user_id] - 1] = -torch.inf
            best = torch.topk(scores, min(request.k, scores.numel()))
            top = [{"item_id": items[i], "score": s} for i, s in zip(best.indices.tolist(), best.values.tolist())]
        return {"user_id": request.user_id, "items": top, "model_version": "torch-eager", "variant": "champion"}

    @app.get("/readyz")
    def readyz() -> dict:
        return {"ready": True}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--snapshot", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    app = create_app(args.bundle, args.snapshot, args.threads, device)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
