"""The local backend's KV cache layer: appends in place instead of concatenating.

Imported by the local backend only once transformers is known to be installed.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views `[:, :, start:end]` of larger buffers.

    `DynamicLayer.update` concatenates, so every decode step copies the whole cache of every layer
    (batch 64 x 600 cached tokens of SmolLM2-135M: 1.8 GB a step in fp32, as much time as the
    matmuls). Here a step writes its new column into free room on the right of the buffer; the
    buffer is reallocated only when that room runs out and when the batch changes rows (`select`,
    `merge`), which copy the cache anyway. A new row that takes a finished row's slot (`place`)
    copies only its own cache. The engine cuts columns no row needs any more off the left with
    `trim`, which only moves `start`.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._keys = self._values = key_states.new_empty((0,))
        self._start = self._end = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self._end + new > (self._keys.shape[-2] if self._keys.dim() == 4 else 0):
            self._reallocate(key_states, new)
        self._keys[:, :, self._end : self._end + new] = key_states
        self._values[:, :, self._end : self._end + new] = value_states
        self._end += new
        return self._views()

    def trim(self, first: int) -> None:
        """Drop the first `first` columns."""
        self._start += first
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Only the rows at `indices` (one gather, which keeps the free room)."""
        if self.get_seq_length() > 0:
            self._keys = self._keys[indices, :, self._start :]
            self._values = self._values[indices, :, self._start :]
            self._start, self._end = 0, self._end - self._start
            self._views()

    def place(self, slots: torch.Tensor, other: GrowingLayer, rows: torch.Tensor, width: int) -> None:
        """Write the last `width` columns of `other`'s rows at `rows` into our rows at `slots`, right-
        aligned; the slots' older columns keep their previous row's (finite) values, which the
        attention mask hides. Copies only those rows, not the whole cache."""
        keys, values = other._used()
        self._keys[slots, :, self._end - width : self._end] = keys[rows, :, -width:]
        self._values[slots, :, self._end - width : self._end] = values[rows, :, -width:]

    def merge(self, other: GrowingLayer, width: int) -> None:
        """Append the rows of `other` below ours, both right-aligned to `width` columns (zeros on the
        left: the attention mask hides them, and zeros keep masked products finite)."""
        (mine, my_values), (theirs, their_values) = self._used(), other._used()
        rows = mine.shape[0] + theirs.shape[0]
        self._keys = mine.new_empty((rows, mine.shape[1], _capacity(width, 1), mine.shape[3]))
        self._values = torch.empty_like(self._keys)
        for buffer, a, b in ((self._keys, mine, theirs), (self._values, my_values, their_values)):
            for part, at in ((a, 0), (b, a.shape[0])):
                pad = width - part.shape[2]
                buffer[at : at + part.shape[0], :, :pad] = 0
                buffer[at : at + part.shape[0], :, pad:width] = part
        self._start, self._end = 0, width
        self._views()

    def _reallocate(self, like: torch.Tensor, new: int) -> None:
        """Fresh buffers with room for `new` more columns and then some, holding the current ones."""
        length = self._end - self._start
        rows, heads, _, dim = like.shape
        keys = like.new_empty((rows, heads, _capacity(length, new), dim))
        values = torch.empty_like(keys)
        if length:
            keys[:, :, :length], values[:, :, :length] = self._used()
        self._keys, self._values = keys, values
        self._start, self._end = 0, length

    def _used(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._keys[:, :, self._start : self._end], self._values[:, :, self._start : self._end]

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = keys, values = self._used()
        return keys, values


def _capacity(length: int, new: int) -> int:
    # Half again as much room as is used (at least 64 columns): reallocations stay rare while a
    # batch decodes, and memory stays within 1.5x of what the cache holds.
    return length + new + max(64, length // 2)
