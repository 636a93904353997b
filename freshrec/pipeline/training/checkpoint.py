"""Checkpoints (safetensors) and warm start with a grown vocabulary.

A checkpoint is a safetensors file: the model's tensors plus, in its JSON header, the model config (so a later
run can rebuild and grow it) and plain extras. Nothing in it executes when read: no pickle, no torch.load.
Where checkpoints sit in a run folder is ``freshrec.core.artifacts.RunLayout``.

With ``training.refit_on_all``, ``teacher.safetensors`` / ``student.safetensors`` and the ``*.onnx`` variants are
the served models (refitted on every interaction once the gates passed), and the gated, holdout-trained ones
stay beside them as ``<name>.eval.safetensors`` and ``student.eval.int8.onnx``. These are training's checkpoints,
as trained; when export keeps a pruned student, the student graphs' weights are export's own checkpoint
(``RunLayout.served_checkpoint``).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from freshrec.core.errors import ArtifactIntegrityError
from freshrec.pipeline.training.models import Student, Teacher, build_model, config_dict, model_config

M = TypeVar("M", Student, Teacher)


def save_checkpoint(model: nn.Module, path: Path, extra: dict | None = None) -> Path:
    """Tensors as they are (contiguous copies where needed); config and extras as JSON in the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    header = {"config": json.dumps(config_dict(model)), "extra": json.dumps(extra or {})}
    partial = path.with_name(f".{path.name}.tmp")
    save_file(state, str(partial), metadata=header)
    partial.replace(path)
    return path


def read_checkpoint(path: Path) -> dict:
    """``{"config": ..., "state": {name: tensor}, **extras}``. A parent checkpoint comes from shared storage:
    safetensors holds data only, so reading one cannot run code; anything else is refused."""
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}
        config, extra = json.loads(header["config"]), json.loads(header.get("extra", "{}"))
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise ArtifactIntegrityError(f"{path}: not a FreshRec checkpoint (safetensors with a model config): {exc}") from None
    return {"config": config, "state": state, **extra}


def load_checkpoint(path: Path, categories: torch.Tensor | None = None) -> tuple[Student | Teacher, dict]:
    payload = read_checkpoint(path)
    model = build_model(payload["config"], categories)
    model.load_state_dict(payload["state"])
    return model.eval(), payload


def load_model(path: Path, kind: type[M], categories: torch.Tensor | None = None) -> tuple[M, dict]:
    """The checkpoint's model, which must be a ``kind`` (a teacher where a student is expected is refused),
    and its payload."""
    model, payload = load_checkpoint(path, categories)
    if not isinstance(model, kind):
        raise ArtifactIntegrityError(f"{path} holds a {type(model).__name__}, not a {kind.__name__}")
    return model, payload


def grow_into(old_state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, list[list[int]]]:
    """Copy ``old_state`` into ``model``; item-indexed dims may have grown (ids are stable, so old row i
    is new row i), new rows keep their fresh initialisation. Buffers (side features) stay as built.

    Returns the shape changes per tensor, for the lineage.
    """
    grown: dict[str, list[list[int]]] = {}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, target in params.items():
            source = old_state.get(name)
            if source is None or source.dim() != target.dim():
                raise ArtifactIntegrityError(f"warm start: parameter {name} does not match the parent checkpoint")
            if any(s > t for s, t in zip(source.shape, target.shape)):
                raise ArtifactIntegrityError(f"warm start: {name} shrank from {list(source.shape)} to {list(target.shape)}")
            block = tuple(slice(0, s) for s in source.shape)
            target[block] = source.to(target.dtype)
            if source.shape != target.shape:
                grown[name] = [list(source.shape), list(target.shape)]
    return grown


def warm_started(config_from_parent: dict, parent_state: dict, model: nn.Module) -> dict:
    """Initialise ``model`` from the parent when the architectures agree; returns what happened."""
    current = config_dict(model)
    # A parent saved before a config field existed had that field's default (e.g. order_window 0).
    defaults = {f.name: f.default for f in fields(model_config(model)) if f.default is not MISSING}
    parent = {**defaults, **config_from_parent}
    same_shape = {k: v for k, v in current.items() if k != "n_items"} == {k: v for k, v in parent.items() if k != "n_items"}
    if not same_shape:
        return {"warm": False, "why": "architecture changed since the parent"}
    return {"warm": True, "grown": grow_into(parent_state, model)}
