"""Vectorised sampling of history pools (a user's past items) for AdaCML, HLR and HLR++.

For every requested row the candidates are the row's items in a reference CSR matrix (train items
while training; train ∪ valid at test time), minus an optional excluded item (the positive, so a
target never appears in its own pool). Rows with more than ``size`` candidates are sub-sampled:

* ``"random"``: uniform, without replacement (the official default);
* ``"unpop"``: with replacement, probability ∝ 1 / popularity (the official 'unpop' rule).

The pool width is ``min(size, longest row)``; shorter rows are padded with ``n_items`` and masked.
Everything is a handful of tensor ops over the concatenated candidates, with no per-row loop, and
runs on whatever device the sampler was built for.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import History

SAMPLING_MODES = ("random", "unpop")


class HistorySampler:
    def __init__(
        self,
        matrix: sp.csr_matrix,
        size: int,
        mode: str = "random",
        device: torch.device | str = "cpu",
    ) -> None:
        if mode not in SAMPLING_MODES:
            raise ConfigError(f"history sampling must be one of {SAMPLING_MODES}, not {mode!r}")
        if size < 0:
            raise ConfigError(f"history size must be >= 0, not {size}")
        self.size = size
        self.mode = mode
        self.device = torch.device(device)
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
        width = min(self.size, int(counts.max())) if n_rows and len(row) else 0
        pool = torch.full((n_rows, width), self.pad, dtype=torch.long, device=self.device)
        if width == 0:
            return History(pool, torch.zeros_like(pool, dtype=torch.bool))
        if self.mode == "random":
            self._fill_random(pool, row, items, counts, width, generator)
        else:
            self._fill_unpop(pool, row, items, counts, width, generator)
        return History(pool, pool != self.pad)

    def _fill_random(self, pool, row, items, counts, width, generator) -> None:
        keys = torch.rand(len(row), generator=generator, device=self.device, dtype=torch.float64)
        order = torch.argsort(row.double() + keys)  # rows stay grouped, shuffled inside each row
        row, items = row[order], items[order]
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(row), device=self.device) - first[row]
        take = rank < width
        pool[row[take], rank[take]] = items[take]

    def _fill_unpop(self, pool, row, items, counts, width, generator) -> None:
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
        draws = torch.rand(
            (len(long_rows), width), generator=generator, device=self.device, dtype=torch.float64
        )
        targets = lower.unsqueeze(1) + draws * totals[long_rows].unsqueeze(1)
        positions = torch.searchsorted(cumulative, targets, right=True)
        last = (first[long_rows] + counts[long_rows] - 1).unsqueeze(1)
        positions = torch.minimum(positions, last).clamp_min(first[long_rows].unsqueeze(1))
        pool[long_rows] = items[positions]
