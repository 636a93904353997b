"""The world ``freshrec bench faults`` breaks: a scratch FRESHREC_HOME with real ONNX bundles, a real online
snapshot and a real registry in a private schema of the local Postgres, plus the servers it runs there.

Built from scratch rather than copied from the home's champion, so the suite runs on a fresh checkout
in seconds: each bundle is a small scoring graph of the bundle signature (the history's item embeddings
averaged, a dot product with every item); ``dim`` sets what a request costs.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from freshrec.core.errors import NotFound
from freshrec.core.layout import Layout
from freshrec.core.registry import Registry, open_registry
from freshrec.core.settings import Settings, load_settings
from freshrec.tools.bench.realtime_ops import _Process, _serve, _World
from freshrec.tools.bench.reports import scratch

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_TOKEN = "faults-bench-admin"
ARTIFACT = "student.fp32.onnx"


def scoring_graph(n_items: int, dim: int, seed: int) -> bytes:
    """An ONNX graph with the bundle signature (history, candidates -> scores), serialised."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(seed).normal(0, 0.5, size=(n_items + 1, dim)).astype(np.float32)
    table[0] = 0.0  # padding row: a masked mean without a mask
    constant = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value)))
    nodes = [
        helper.make_node("Gather", ["item_emb", "history"], ["hist_emb"], axis=0),
        constant("axis1", np.array([1], dtype=np.int64)),
        constant("axis_last", np.array([-1], dtype=np.int64)),
        helper.make_node("ReduceMean", ["hist_emb", "axis1"], ["user"], keepdims=0),
        helper.make_node("Unsqueeze", ["user", "axis_last"], ["user3"]),
        helper.make_node("Gather", ["item_emb", "candidates"], ["cand_emb"], axis=0),
        helper.make_node("MatMul", ["cand_emb", "user3"], ["scores3"]),
        helper.make_node("Squeeze", ["scores3", "axis_last"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "freshrec_faults_scorer",
        [helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", "history_len"]),
         helper.make_tensor_value_info("candidates", TensorProto.INT64, ["batch", "n_candidates"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "n_candidates"])],
        [numpy_helper.from_array(table, "item_emb")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _write_snapshot(online: Path, items: list[str], users: dict[str, list[str]]) -> None:
    folder = online / "faults-snapshot"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": list(users), "history": list(users.values()), "seen": list(users.values())}),
                   folder / "users.parquet")
    pq.write_table(pa.table({"item_id": items, "popularity": [float(len(items) - n) for n in range(len(items))]}),
                   folder / "items.parquet")
    (online / "CURRENT").write_text(folder.name)


@dataclass
class FaultWorld:
    """The scratch home, its registry (a private Postgres schema) and what servers there run with."""

    home: Path
    registry: Registry
    registry_url: str
    items: list[str]
    users: list[str]
    n_items: int
    dim: int
    base: _World = field(init=False)

    def __post_init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FRESHREC_", "AIRFLOW", "PROMETHEUS_MULTIPROC"))}
        env.update(FRESHREC_HOME=str(self.home), FRESHREC_REGISTRY_URL=self.registry_url,
                   FRESHREC_ADMIN_TOKEN=ADMIN_TOKEN, FRESHREC_SERVING__ARTIFACT_VARIANT="fp32",
                   FRESHREC_SERVING__CACHE_TTL_S="0", FRESHREC_SERVING__RECONCILE_INTERVAL_S="0.2",
                   FRESHREC_ONLINE__ENABLED="false")
        self.base = _World(self.home, env, self.items, self.users)

    def register(self, seed: int) -> str:
        """A new candidate version: its own bundle folder with a graph of its own (``seed``)."""
        bundle = self.home / "models" / f"run-{uuid.uuid4().hex[:8]}"
        bundle.mkdir(parents=True)
        (bundle / ARTIFACT).write_bytes(scoring_graph(self.n_items, self.dim, seed))
        (bundle / "vocab.json").write_text(json.dumps({"items": self.items, "users": []}))
        view = self.registry.register_candidate(bundle, {"fp32": bundle / ARTIFACT}, {}, {}, {}, actor="bench-faults")
        return str(view.version)

    def champion(self, alias: str = "champion") -> str | None:
        """The version the registry's ``alias`` (champion or previous) points at."""
        view = getattr(self.registry.serving_state(), alias)
        return None if view is None else str(view.version)

    def artifact(self, version: str) -> Path:
        return Path(self.registry.get_version(int(version)).artifacts["fp32"].uri)

    def env(self, registry_url: str | None = None, **settings: str) -> dict[str, str]:
        """Server environment: the world's, a registry URL of its own (a proxy's) and settings on top."""
        return {**self.base.env, **({"FRESHREC_REGISTRY_URL": registry_url} if registry_url else {}), **settings}

    def serve(self, env: dict[str, str] | None = None, workers: int = 1) -> _Process:
        """``freshrec serve`` on a free port (not started: use it as a context manager, or ``start()``)."""
        return _serve(self.base, env or self.env(), workers=workers)


@contextlib.contextmanager
def private_schema(admin_url: str) -> Iterator[str]:
    """A uniquely named Postgres schema, dropped afterwards; yields a URL whose search_path points at it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"freshrec_faults_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        raise NotFound(f"the fault suite needs a Postgres registry and {admin_url} does not answer: {exc}") from exc
    try:
        yield f"{admin_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def fault_world(settings: Settings, *, pg_url: str = PG_URL, n_items: int = 4000, dim: int = 16,
                n_users: int = 400) -> Iterator[FaultWorld]:
    """A champion (version 1, promoted) in a scratch home; removed afterwards with its schema."""
    rng = np.random.default_rng(0)
    items = [str(i) for i in range(1, n_items + 1)]
    users = {f"u{n}": [items[j] for j in rng.choice(n_items, size=int(rng.integers(5, 30)), replace=False)]
             for n in range(n_users)}
    with scratch(settings, "faults-") as home, private_schema(pg_url) as url:
        _write_snapshot(Layout(home).online, items, users)
        registry = open_registry(load_settings(home=home), url=url)
        try:
            world = FaultWorld(home, registry, url, items, list(users), n_items, dim)
            registry.promote(int(world.register(seed=1)), actor="bench-faults", reason="first champion")
            yield world
        finally:
            registry.close()
