"""Vectorised sampling of history pools (a user's past items) for AdaCML, HLR and HLR++.

For every requested row the candidates are the row's items in a reference CSR matrix (train items
while training; train ∪ valid at test time), minus an optional excluded item (the positive, so a
target never appears in its own pool). Rows with more than ``size`` candidates are sub-sampled:

* ``"random"``: uniform, without replacement (the official default);
* ``"unpop"``: with replacement, probability ∝ 1 / popularity (the official 'unpop' rule).

The pool width is ``min(size, longest row)``; shorter rows are padded with ``n_items`` and masked.
Everything is a handful of tensor ops over the concatenated candidates, with no per-row loop, and
runs on whatever device the sampler was built for.

Training and evaluation draw pools from a generator, so a row's pool depends on the rows drawn
with it. A sampler built with ``keyed_seed`` (deployed recommendations) instead draws each row's
pool as a fixed function of (seed, user, item), padded to the full ``size``: a user gets the same
pool, hence the same list, whichever other users are ranked in the same batch.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import History

SAMPLING_MODES = ("random", "unpop")


def _as_int64(constant: int) -> int:
    """A 64-bit constant as the signed value an int64 tensor holds."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


_GOLDEN = _as_int64(0x9E3779B97F4A7C15)
_MIX = (_as_int64(0xBF58476D1CE4E5B9), _as_int64(0x94D049BB133111EB))


def _shift_right(values: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 tensors (``>>`` is arithmetic on signed integers)."""
    return (values >> bits) & ((1 << (64 - bits)) - 1)


def keyed_uniform(seed: int, *keys: Tensor) -> Tensor:
    """Float64 numbers in [0, 1), elementwise a fixed function of ``seed`` and the int64 ``keys``
    (which broadcast): the SplitMix64 finaliser applied to each key in turn. Integer products wrap
    modulo 2^64 on every torch device, so the numbers are the same on CPU and GPU."""
    state = torch.full((), seed, dtype=torch.int64, device=keys[0].device)
    for key in keys:
        state = (state + key.to(torch.int64) + 1) * _GOLDEN
        state = (state ^ _shift_right(state, 30)) * _MIX[0]
        state = (state ^ _shift_right(state, 27)) * _MIX[1]
        state = state ^ _shift_right(state, 31)
    return _shift_right(state, 11).to(torch.float64) * 2.0**-53


class HistorySampler:
    def __init__(
        self,
        matrix: sp.csr_matrix,
        size: int,
        mode: str = "random",
        device: torch.device | str = "cpu",
        *,
        keyed_seed: int | None = None,
    ) -> None:
        """``keyed_seed``: draw every row's pool from (seed, user, item) alone and pad it to
        ``size`` (see the module docstring); ``sample``'s generator is then unused."""
        if mode not in SAMPLING_MODES:
            raise ConfigError(f"history sampling must be one of {SAMPLING_MODES}, not {mode!r}")
        if size < 0:
            raise ConfigError(f"history size must be >= 0, not {size}")
        self.size = size
        self.mode = mode
        self.device = torch.device(device)
        self.keyed_seed = keyed_seed
        self.pad = matrix.shape[1]
        self.indptr = torch.from_numpy(matrix.indptr.astype(np.int64)).to(self.device)
        self.indices = torch.from_numpy(matrix.indices.astype(np.int64)).to(self.device)
        counts = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float64)
        # Inverse popularity of the reference matrix itself; every candidate has count >= 1.
        self.inverse_popularity = torch.from_numpy(1.0 / np.maximum(counts, 1.0)).to(self.device)

    def sample(
        self,
        users: Tensor,
        exclude: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> History:
        users = users.to(self.device)
        n_rows = len(users)
        start = self.indptr[users]
        counts = self.indptr[users + 1] - start
        row = torch.repeat_interleave(torch.arange(n_rows, device=self.device), counts)
        first = torch.cumsum(counts, 0) - counts
        offset = torch.arange(len(row), device=self.device) - first[row]
        items = self.indices[start[row] + offset]
        if exclude is not None:
            keep = items != exclude.to(self.device)[row]
            row, items = row[keep], items[keep]
        counts = torch.bincount(row, minlength=n_rows)
        if self.keyed_seed is not None:
            width = self.size
        else:
            width = min(self.size, int(counts.max())) if n_rows and len(row) else 0
        pool = torch.full((n_rows, width), self.pad, dtype=torch.long, device=self.device)
        if width == 0 or len(row) == 0:
            return History(pool, torch.zeros_like(pool, dtype=torch.bool))
        if self.mode == "random":
            self._fill_random(pool, users, row, items, counts, width, generator)
        else:
            self._fill_unpop(pool, users, row, items, counts, width, generator)
        return History(pool, pool != self.pad)

    def _fill_random(self, pool, users, row, items, counts, width, generator) -> None:
        if self.keyed_seed is not None:
            keys = keyed_uniform(self.keyed_seed, users[row], items)
        else:
            keys = torch.rand(
                len(row), generator=generator, device=self.device, dtype=torch.float64
            )
        order = torch.argsort(row.double() + keys)  # rows stay grouped, shuffled inside each row
        row, items = row[order], items[order]
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(row), device=self.device) - first[row]
        take = rank < width
        pool[row[take], rank[take]] = items[take]

    def _fill_unpop(self, pool, users, row, items, counts, width, generator) -> None:
        n_rows = len(counts)
        # Rows that fit keep all their candidates; longer rows draw `width` items with replacement.
        short = counts[row] <= width
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(row), device=self.device) - first[row]
        pool[row[short], rank[short]] = items[short]
        long_rows = torch.nonzero(counts > width).squeeze(1)
        if len(long_rows) == 0:
            return
        weights = self.inverse_popularity[items]
        cumulative = torch.cumsum(weights, 0)
        totals = torch.zeros(n_rows, dtype=torch.float64, device=self.device)
        totals.index_add_(0, row, weights)
        ends = cumulative[first[long_rows] + counts[long_rows] - 1]
        lower = ends - totals[long_rows]
        if self.keyed_seed is not None:
            slots = torch.arange(width, device=self.device)
            draws = keyed_uniform(self.keyed_seed, users[long_rows].unsqueeze(1), slots)
        else:
            draws = torch.rand(
                (len(long_rows), width),
                generator=generator,
                device=self.device,
                dtype=torch.float64,
            )
        targets = lower.unsqueeze(1) + draws * totals[long_rows].unsqueeze(1)
        positions = torch.searchsorted(cumulative, targets, right=True)
        last = (first[long_rows] + counts[long_rows] - 1).unsqueeze(1)
        positions = torch.minimum(positions, last).clamp_min(first[long_rows].unsqueeze(1))
        pool[long_rows] = items[positions]
