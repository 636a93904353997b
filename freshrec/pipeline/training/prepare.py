"""Build the training data of one run: vocabulary, training histories, early-stopping split, holdout,
and every interaction's histories (the refit of the served models once the gates have passed).

``prepare`` is pure (interactions in, ``TrainingData`` out); ``save``/``load`` move it between the
DAG's tasks as one .npz file in the run's work folder, no pickle (XCom carries only its path).
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from freshrec.core.errors import DataValidationError
from freshrec.pipeline.offline.holdout import COLD_USER_MAX_HISTORY, Splitter, make_holdout, relevant_unseen
from freshrec.pipeline.training.dataset import Vocab, build_vocab, pad_histories
from freshrec.pipeline.training.histories import Histories, HistoryBuilder, reference_histories
from freshrec.pipeline.training.trainer import Validation

VALIDATION_SHARE = 0.1


@dataclass
class EvalSet:
    """Users to rank for: their input histories (padded), seen items (excluded) and held-out items."""

    users: list[str]
    histories: np.ndarray
    seen: list[np.ndarray]
    relevant: list[np.ndarray]
    cold: np.ndarray  # bool per user: fewer than COLD_USER_MAX_HISTORY training items


@dataclass
class TrainingData:
    protocol: str
    cutoff: str | None
    vocab: Vocab
    categories: np.ndarray
    history_len: int
    train: dict[str, np.ndarray]  # every training-part history (inputs of the holdout's users)
    fit: list[np.ndarray]  # training histories minus the early-stopping items (what the gated models learn)
    validation: Validation
    test: EvalSet
    counts: dict
    full: dict[str, np.ndarray] = field(default_factory=dict)  # every interaction (training part + holdout)
    # Last-interaction times (epoch seconds) aligned with ``fit`` and ``full`` (the session-aware wide layer)
    fit_times: list[np.ndarray] = field(default_factory=list)
    train_times: dict[str, np.ndarray] = field(default_factory=dict)
    full_times: dict[str, np.ndarray] = field(default_factory=dict)
    # Per-item signal (log of the summed event strength), aligned like the times; empty without event types.
    # The wide layer may weight its Gram matrix with it when the validation split says that ranks better.
    fit_signals: list[np.ndarray] = field(default_factory=list)
    train_signals: dict[str, np.ndarray] = field(default_factory=dict)
    full_signals: dict[str, np.ndarray] = field(default_factory=dict)
    parts: dict[str, dict] = field(default_factory=dict)  # "train" / "holdout" / "all": rows, pairs, users, dates


def validation_draws(users: list[str], items: list[str], seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per (user, item) pair that depends only on the two ids and the seed.

    The early-stopping split holds out the pairs below the share, so a pair lands on the same side in
    every run: a champion's holdout-trained weights (what a warm start begins from) never learnt a pair
    that the next run validates on, and the warm-start gain is not inflated by memorised items."""
    key = f"freshrec{seed:08d}"[-16:]
    keys = pd.Series(users, dtype=object).str.cat(pd.Series(items, dtype=object), sep="\x1f")
    hashed = pd.util.hash_array(keys.to_numpy(dtype=object), hash_key=key)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_validation(
    train: dict[str, np.ndarray], history_len: int, vocab: Vocab, seed: int, share: float = VALIDATION_SHARE,
    times: dict[str, np.ndarray] | None = None, signals: dict[str, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], Validation, list[np.ndarray], list[np.ndarray]]:
    """Per user with >= 5 items, the items whose :func:`validation_draws` fall below ``share`` are held out
    for early stopping (at least one: the lowest draw).

    Returns the kept histories, the validation set, and the kept items' times and signals (empty without them)."""
    users = [u for u, items in train.items() for _ in range(len(items))]
    codes = np.concatenate(list(train.values())) if train else np.zeros(0, dtype=np.int64)
    item_ids = [vocab.items[c - 1] for c in codes]
    draws = np.split(validation_draws(users, item_ids, seed), np.cumsum([len(h) for h in train.values()])[:-1]) if train else []
    fit, fit_times, fit_signals, inputs, seen, targets = [], [], [], [], [], []
    for (user, items), draw in zip(train.items(), draws):
        held = np.zeros(len(items), dtype=bool)
        if len(items) >= 5:
            held = draw < share
            if not held.any():
                held[np.argmin(draw)] = True
        kept = items[~held]
        fit.append(kept)
        if times is not None:
            fit_times.append(times[user][~held])
        if signals:
            fit_signals.append(signals[user][~held])
        if held.any():
            inputs.append(kept)
            seen.append(kept)
            targets.append(items[held])
    return fit, Validation(pad_histories(inputs, history_len), seen, targets), fit_times, fit_signals


def cut_validation(fit_histories: Histories, targets_part: pd.DataFrame, vocab: Vocab, history_len: int
                   ) -> tuple[list[np.ndarray], Validation, list[np.ndarray], list[np.ndarray]]:
    """Early stopping on a cut of events: the users with events in ``targets_part`` rank its items from their
    ``fit_histories``. Returns what ``split_validation`` returns (users in id order)."""
    fit, fit_times, fit_signals = fit_histories
    index = vocab.item_index()
    targets = {u: np.array([index[i] for i in items], dtype=np.int64) for u, items in targets_part.groupby("user_id")["item_id"]}
    users = sorted(targets)
    empty = np.zeros(0, dtype=np.int64)
    inputs = [fit.get(u, empty) for u in users]
    validation = Validation(pad_histories(inputs, history_len), inputs, [targets[u] for u in users])
    ordered = sorted(fit)
    return [fit[u] for u in ordered], validation, [fit_times[u] for u in ordered], [fit_signals[u] for u in ordered if fit_signals]


def eval_set(train: dict[str, np.ndarray], relevant: dict[str, np.ndarray], history_len: int) -> EvalSet:
    users = sorted(relevant)
    empty = np.zeros(0, dtype=np.int64)
    seen = [train.get(u, empty) for u in users]
    return EvalSet(
        users=users,
        histories=pad_histories(seen, history_len),
        seen=seen,
        relevant=[relevant[u] for u in users],
        cold=np.array([len(s) < COLD_USER_MAX_HISTORY for s in seen], dtype=bool),
    )


def prepare(
    interactions: pd.DataFrame,
    protocol: str,
    holdout_days: int,
    history_len: int,
    seed: int,
    categories_for: Callable[[Vocab], np.ndarray],
    parent_vocab: Vocab | None = None,
    splitter: Splitter | None = None,
    histories: HistoryBuilder = reference_histories,
    fit_cut: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> TrainingData:
    """``categories_for(vocab)`` returns the item side-feature table (I/O stays with the caller).

    ``histories`` builds every part's histories in one call (the retrain passes Spark's builder). Without
    ``fit_cut`` the early-stopping items are a random share of each training history (``split_validation``);
    with it, (events the gated models learn from, events whose first interactions are the validation targets),
    the cut of the time-ordered protocols."""
    vocab = build_vocab(interactions, parent_vocab)
    holdout = make_holdout(interactions, protocol, holdout_days, splitter, seed)
    parts = {"train": holdout.train, "full": interactions, **({"fit": fit_cut[0]} if fit_cut is not None else {})}
    built = histories(parts, vocab)
    train, train_times, train_signals = built["train"]
    relevant = relevant_unseen(holdout.test, train, vocab.item_index())
    if fit_cut is None:
        fit, validation, fit_times, fit_signals = split_validation(train, history_len, vocab, seed, times=train_times,
                                                                    signals=train_signals)
    else:
        fit, validation, fit_times, fit_signals = cut_validation(built["fit"], fit_cut[1], vocab, history_len)
    test = eval_set(train, relevant, history_len)
    full, full_times, full_signals = built["full"]
    return TrainingData(
        protocol=protocol,
        cutoff=holdout.cutoff,
        vocab=vocab,
        categories=categories_for(vocab),
        history_len=history_len,
        train=train,
        fit=fit,
        validation=validation,
        test=test,
        counts={
            "interactions": int(len(interactions)),
            "train_interactions": int(len(holdout.train)),
            "test_interactions": int(len(holdout.test)),
            "users": len(vocab.users),
            "items": vocab.n_items,
            "test_users": len(test.users),
            "cold_test_users": int(test.cold.sum()),
            "new_items": vocab.n_items - (parent_vocab.n_items if parent_vocab else 0),
            "new_users": len(vocab.users) - (len(parent_vocab.users) if parent_vocab else 0),
        },
        full=full,
        fit_times=fit_times,
        train_times=train_times,
        full_times=full_times,
        fit_signals=fit_signals,
        train_signals=train_signals,
        full_signals=full_signals,
        parts={
            "train": part_facts(holdout.train, train),
            "holdout": part_facts(holdout.test),
            "all": part_facts(interactions, full),
        },
    )


def part_facts(rows: pd.DataFrame, histories: dict[str, np.ndarray] | None = None) -> dict:
    """What a part of the data holds: interaction rows, distinct (user, item) pairs, users, first/last event."""
    facts = {
        "rows": int(len(rows)),
        "users": int(rows["user_id"].nunique()),
        "first_ts": rows["ts"].min().isoformat() if len(rows) else None,
        "last_ts": rows["ts"].max().isoformat() if len(rows) else None,
    }
    if histories is not None:
        facts["user_item_pairs"] = int(sum(len(h) for h in histories.values()))
    return facts


def training_data_facts(data: TrainingData, served_on_all: bool) -> dict:
    """For the model card, lineage and report: what the served model and the gated model learnt from."""
    gated = {"part": "training part of the holdout protocol", **data.parts.get("train", {})}
    served = {"part": "all interactions (training part + holdout)", **data.parts.get("all", {})} if served_on_all else gated
    return {
        "protocol": data.protocol,
        "holdout_cutoff": data.cutoff,
        "served_model": served,
        "holdout_trained_model": gated,
        "holdout": data.parts.get("holdout", {}),
        "holdout_metrics_from": "the holdout-trained models, which never saw the holdout"
        + (" (student.eval.int8.onnx, teacher.eval.safetensors, student.eval.safetensors); the served graphs were refitted on all "
           "interactions after the gates passed, so they have no holdout metrics of their own" if served_on_all else
           "; they are the served models"),
    }


# One .npz, no pickle: arrays as they are, lists and dicts of 1-D arrays as one concatenated array plus
# lengths (and keys), everything else as JSON in the "meta" entry. Loading never executes anything.
_CLASSES = {cls.__name__: cls for cls in (TrainingData, Vocab, Validation, EvalSet)}
FORMAT = "freshrec.training_set/1"


def _arrays_only(values: list) -> bool:
    return bool(values) and all(isinstance(v, np.ndarray) and v.ndim == 1 for v in values)


def _encode(value, key: str, arrays: dict[str, np.ndarray]):
    if dataclasses.is_dataclass(value):
        return {"class": type(value).__name__,
                "fields": {f.name: _encode(getattr(value, f.name), f"{key}.{f.name}", arrays) for f in dataclasses.fields(value)}}
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    if isinstance(value, dict) and _arrays_only(list(value.values())):
        _ragged(list(value.values()), key, arrays)
        return {"ragged_dict": key, "keys": list(value)}
    if isinstance(value, list) and _arrays_only(value):
        _ragged(value, key, arrays)
        return {"ragged": key}
    return {"json": value}


def _ragged(values: list[np.ndarray], key: str, arrays: dict[str, np.ndarray]) -> None:
    arrays[f"{key}/values"] = np.concatenate(values)
    arrays[f"{key}/lengths"] = np.array([v.size for v in values], dtype=np.int64)


def _decode(node: dict, arrays):
    if "class" in node:
        return _CLASSES[node["class"]](**{name: _decode(child, arrays) for name, child in node["fields"].items()})
    if "array" in node:
        return arrays[node["array"]]
    if "ragged" in node or "ragged_dict" in node:
        key = node.get("ragged") or node["ragged_dict"]
        parts = np.split(arrays[f"{key}/values"], np.cumsum(arrays[f"{key}/lengths"])[:-1])
        return dict(zip(node["keys"], parts)) if "ragged_dict" in node else parts
    return node["json"]


def _plain(value):
    """numpy scalars as Python numbers; anything else that is not JSON is a bug here, not a string."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"training set: cannot store a {type(value).__name__} without pickle")


def save(data: TrainingData, path: Path) -> Path:
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(data, "data", arrays)
    meta = json.dumps({"format": FORMAT, "tree": tree}, default=_plain)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, meta=np.array(meta), **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds vs allow_pickle
    return path


def load(path: Path) -> TrainingData:
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"])) if "meta" in stored.files else {}
            arrays = {name: stored[name] for name in stored.files if name != "meta"}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataValidationError(f"{path}: not a readable training set ({exc})") from None
    if meta.get("format") != FORMAT:
        raise DataValidationError(f"{path}: not a {FORMAT} file (rebuild the datasets with this code version)")
    return _decode(meta["tree"], arrays)
