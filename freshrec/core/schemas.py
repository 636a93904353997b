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
# ANN retrieval (catalogues above serving.max_candidates): the student's user tower,
#   history int64 [batch, history_len] -> query float32 [batch, dim + 1], extra_items int64 [batch, n]
# (the items its sparse terms score exactly, 0 = padding), and an index of the item keys [out_i; bias_i]
# (usearch HNSW, inner product, key = item index), searched with the query.
ONNX_OUTPUT_QUERY: Final = "query"
ONNX_OUTPUT_EXTRA_ITEMS: Final = "extra_items"

# Files of a model bundle directory (models/<run>/).
BUNDLE_VOCAB: Final = "vocab.json"          # {"items": [...item_id], "users": [...user_id]}
BUNDLE_CARD: Final = "model_card.json"
SHA256SUMS: Final = "SHA256SUMS"            # "<sha256>  <file>" for every bundle file, the card included
BUNDLE_USER_TOWER: Final = "student.user.onnx"      # retrieval only: the query graph (above)
BUNDLE_CANDIDATE_GRAPH: Final = "student.candidates.onnx"  # retrieval only: scores the given candidates only
BUNDLE_ITEM_INDEX: Final = "items.usearch"           # retrieval only: the item keys' HNSW index
ARTIFACT_VARIANTS: Final = ("fp32", "int8", "fp16")
