"""Run folders, torch checkpoints and warm start with a grown vocabulary.

A run folder ``models/<run id>/`` is the bundle the registry points at; intermediate files live in its
``work/`` sub-folder. Checkpoints carry the model config so a later run can rebuild and grow them.

With ``training.refit_on_all``, ``teacher.pt`` / ``student.pt`` and the ``*.onnx`` variants are the served
models (refitted on every interaction once the gates passed), and the gated, holdout-trained ones stay
beside them as ``<name>.eval.pt`` and ``student.eval.int8.onnx``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from freshrec.core.errors import ArtifactIntegrityError
from freshrec.pipeline.training.models import build_model, config_dict

CHECKPOINTS = {"teacher": "teacher.pt", "student": "student.pt"}


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def data(self) -> Path:
        return self.work / "training_set.npz"

    def checkpoint(self, name: str) -> Path:
        # teacher and student stay in the bundle (the next run warm-starts from them); the control is scratch
        return self.root / CHECKPOINTS[name] if name in CHECKPOINTS else self.work / f"{name}.pt"

    def eval_checkpoint(self, name: str) -> Path:
        """The holdout-trained (gated) checkpoint once the served one was refitted on all interactions."""
        return self.root / f"{name}.eval.pt"

    def onnx(self, name: str, variant: str) -> Path:
        return self.root / f"{name}.{variant}.onnx"

    def eval_onnx(self, name: str, variant: str) -> Path:
        """The holdout-trained graph kept next to the served one (the next run's champion comparison)."""
        return self.root / f"{name}.eval.{variant}.onnx"

    @property
    def refit(self) -> Path:
        """Summary of the refit on all interactions (absent: the served models are the gated ones)."""
        return self.work / "refit_on_all.json"

    def report(self, name: str) -> Path:
        return self.root / name


def save_checkpoint(model: nn.Module, path: Path, extra: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config_dict(model), "state": model.state_dict(), **(extra or {})}, path)
    return path


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's payload: tensors, numbers, strings, lists and dicts only. A parent checkpoint comes from
    shared storage, so unpickling arbitrary objects (code execution) is refused, not just avoided."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message is a page of advice; its last line says what was found
        found = next((line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error" in line), str(exc))
        raise ArtifactIntegrityError(f"{path}: not a plain checkpoint (tensors and plain values only); {found}") from None


def load_checkpoint(path: Path, categories: torch.Tensor | None = None) -> tuple[nn.Module, dict]:
    payload = read_checkpoint(path)
    model = build_model(payload["config"], categories)
    model.load_state_dict(payload["state"])
    return model.eval(), payload


def grow_into(old_state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, list[int]]:
    """Copy ``old_state`` into ``model``; item-indexed dims may have grown (ids are stable, so old row i
    is new row i), new rows keep their fresh initialisation. Buffers (side features) stay as built.

    Returns the shape changes per tensor, for the lineage.
    """
    grown: dict[str, list[int]] = {}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, target in params.items():
            source = old_state.get(name)
            if source is None or source.dim() != target.dim():
                raise ValueError(f"warm start: parameter {name} does not match the parent checkpoint")
            if any(s > t for s, t in zip(source.shape, target.shape)):
                raise ValueError(f"warm start: {name} shrank from {list(source.shape)} to {list(target.shape)}")
            block = tuple(slice(0, s) for s in source.shape)
            target[block] = source.to(target.dtype)
            if source.shape != target.shape:
                grown[name] = [list(source.shape), list(target.shape)]
    return grown


def warm_started(config_from_parent: dict, parent_state: dict, model: nn.Module) -> dict:
    """Initialise ``model`` from the parent when the architectures agree; returns what happened."""
    current = config_dict(model)
    same_shape = {k: v for k, v in current.items() if k not in ("n_items",)} == {
        k: v for k, v in config_from_parent.items() if k not in ("n_items",)
    }
    if not same_shape:
        return {"warm": False, "why": "architecture changed since the parent"}
    return {"warm": True, "grown": grow_into(parent_state, model)}
