"""Ragged int64 rows (CSR: one flat value array + row offsets): per-user item lists without a Python
object per user, built and filtered with vectorised numpy only (snapshots can hold millions of users)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ragged:
    values: np.ndarray  # int64 (int32 in a memory-mapped snapshot table; rows read back as int64)
    offsets: np.ndarray  # int64 [n_rows + 1]

    @classmethod
    def from_counts(cls, values: np.ndarray, counts: np.ndarray) -> Ragged:
        offsets = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(np.ascontiguousarray(values, dtype=np.int64), offsets)

    def __len__(self) -> int:
        return self.offsets.size - 1

    def __getitem__(self, row: int) -> np.ndarray:
        """The row as int64 (a shared snapshot table stores int32 values: half the pages)."""
        values = self.values[self.offsets[row] : self.offsets[row + 1]]
        return values if values.dtype == np.int64 else values.astype(np.int64)

    def row_ids(self) -> np.ndarray:
        """The row of every value."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))

    def keep(self, mask: np.ndarray) -> Ragged:
        """Only the values where ``mask`` holds, rows preserved."""
        counts = np.bincount(self.row_ids()[mask], minlength=len(self))
        return Ragged.from_counts(self.values[mask], counts)

    def last(self, n: int) -> Ragged:
        """The last ``n`` values of every row."""
        position = np.arange(self.values.size) - np.repeat(self.offsets[:-1], np.diff(self.offsets))
        from_end = np.repeat(np.diff(self.offsets), np.diff(self.offsets)) - position
        return self.keep(from_end <= n)

    def distinct(self, width: int) -> Ragged:
        """Distinct values per row (sorted); values must lie in [0, width)."""
        keys = np.sort(self.row_ids() * width + self.values)  # sort + neighbour test: np.unique is far slower here
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys
        return Ragged.from_counts(keys % width, np.bincount(keys // width, minlength=len(self)))

    def mapped(self, table: np.ndarray) -> Ragged:
        """Values replaced by ``table[value]``; entries mapped to a negative number are dropped."""
        mapped = table[self.values]
        return Ragged(mapped, self.offsets).keep(mapped >= 0)
