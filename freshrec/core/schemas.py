"""Data contracts shared by every plane: the raw event schema and the model bundle signature."""

from __future__ import annotations

from typing import Final

EVENT_TYPES: Final = ("view", "click", "rating", "purchase")
RAW_COLUMNS: Final = ("user_id", "item_id", "event_type", "value", "ts")
RAW_FILE_SUFFIXES: Final = (".csv", ".jsonl", ".json", ".parquet")

# Implicit-feedback weight of each event type (rating events use their stars instead).
EVENT_WEIGHTS: Final = {"view": 1.0, "click": 2.0, "rating": 3.0, "purchase": 5.0}

# ONNX signature every exported scoring model follows (student and teacher alike):
#   history    int64 [batch, history_len]   item indices of the user's history, oldest first, 0 = padding
#   candidates int64 [batch, n_candidates]  item indices to score (1..n_items)
#   -> scores  float32 [batch, n_candidates]
# Item index i >= 1 maps to vocab["items"][i - 1]; index 0 is reserved for padding.
ONNX_INPUT_HISTORY: Final = "history"
ONNX_INPUT_CANDIDATES: Final = "candidates"
ONNX_OUTPUT_SCORES: Final = "scores"
PAD_INDEX: Final = 0

# Files of a model bundle directory (models/<run>/).
BUNDLE_VOCAB: Final = "vocab.json"          # {"items": [...item_id], "users": [...user_id]}
BUNDLE_CARD: Final = "model_card.json"
SHA256SUMS: Final = "SHA256SUMS"            # "<sha256>  <file>" for every bundle file, the card included
ARTIFACT_VARIANTS: Final = ("fp32", "int8", "fp16")
