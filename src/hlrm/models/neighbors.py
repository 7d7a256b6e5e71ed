"""Item-item neighbourhood baselines computed in closed form: item-kNN (cosine) and EASE^R.

Neither model is trained by gradient descent: :meth:`~FittedRecommender.prepare` computes the
item-item weights from the binary training matrix, and a user's scores are their training row
times those weights. Scores therefore come from the TRAIN items only — the standard choice for
these models; the evaluator masks train ∪ valid items anyway, so validation items are neither
inputs nor candidates.

Everything :meth:`score` reads lives in buffers, so a checkpoint restores the model without the
data. Buffers whose size depends on the data (the stored training rows, the kept neighbours) start
empty and take the checkpoint's shape when loaded. ``prepare`` remembers a fingerprint of the
matrix it was fitted on and does nothing when called again with the same matrix (re-opening a
saved run), but refits on a different one (fold-in of a new user).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack
from torch import Tensor

from hlrm.errors import ConfigError, DataError
from hlrm.models.base import History, Recommender, register

#: Dense entries per block of the item-item Gram matrix (64 MiB of float32), which bounds the
#: working memory of item-kNN to O(n_items · neighbors) plus one block.
BLOCK_ENTRIES = 1 << 24


def binary_train(train: sp.spmatrix) -> sp.csr_matrix:
    """The training matrix as canonical binary float32 CSR (explicit zeros dropped, sorted)."""
    matrix = sp.csr_matrix(train, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def matrix_fingerprint(matrix: sp.csr_matrix) -> Tensor:
    """(rows, columns, nnz, CRC-32 of the sparsity pattern) of a canonical binary CSR matrix."""
    crc = zlib.crc32(matrix.indptr.astype(np.int64).tobytes())
    crc = zlib.crc32(matrix.indices.astype(np.int64).tobytes(), crc)
    return torch.tensor([*matrix.shape, matrix.nnz, crc], dtype=torch.int64)


def gram_row_blocks(matrix: sp.csr_matrix) -> Iterator[tuple[slice, np.ndarray]]:
    """Row blocks ``(XᵀX)[rows]`` as dense float32 arrays of at most :data:`BLOCK_ENTRIES` entries.

    Never builds the whole co-occurrence matrix, which is nearly dense among popular items.
    """
    n_items = matrix.shape[1]
    width = max(1, BLOCK_ENTRIES // n_items)
    by_item = matrix.T.tocsr()
    for start in range(0, n_items, width):
        rows = slice(start, min(start + width, n_items))
        yield rows, (by_item[rows] @ matrix).toarray()


def spd_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive-definite float64 matrix, overwriting ``matrix``.

    LAPACK's Cholesky factorisation and inverse (potrf, potri) work in place, so the peak memory is
    one n×n matrix instead of the two or three of ``np.linalg.inv``.
    """
    # A C-ordered symmetric matrix is its own Fortran-ordered transpose: LAPACK can use the memory.
    factor, info = lapack.dpotrf(matrix.T, lower=0, clean=0, overwrite_a=1)
    if info == 0:
        factor, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise DataError(
            f"the regularised Gram matrix is not positive definite (LAPACK info {info})"
        )
    inverse = factor.T  # valid in the lower triangle; mirror it into the upper one
    n = inverse.shape[0]
    width = max(1, BLOCK_ENTRIES // n)
    for start in range(0, n, width):
        stop = min(start + width, n)
        diagonal = inverse[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        diagonal[upper] = diagonal.T[upper]
        inverse[start:stop, stop:] = inverse[stop:, start:stop].T
    return inverse


class FittedRecommender(Recommender):
    """A model whose state is computed from the training matrix by :meth:`fit`, not trained.

    ``data_buffers`` names the buffers whose shape depends on the data; they are resized to the
    checkpoint's shape before a ``load_state_dict``.
    """

    trainable = False
    data_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items)
        self.register_buffer("fitted_on", torch.full((4,), -1, dtype=torch.int64))

    def prepare(self, train: sp.csr_matrix) -> None:
        matrix = binary_train(train)
        if matrix.shape != (self.n_users, self.n_items):
            raise DataError(
                f"{self.name} was built for {self.n_users} users × {self.n_items} items, "
                f"not a {matrix.shape[0]} × {matrix.shape[1]} training matrix"
            )
        fingerprint = matrix_fingerprint(matrix)
        if torch.equal(self.fitted_on.cpu(), fingerprint):
            return
        self.fit(matrix)
        self.fitted_on.copy_(fingerprint)

    def fit(self, train: sp.csr_matrix) -> None:
        """Compute the model's buffers from the canonical binary training matrix."""
        raise NotImplementedError

    def require_fitted(self) -> None:
        if int(self.fitted_on[0]) < 0:
            raise RuntimeError(f"{self.name} needs prepare(train) before scoring")

    def set_buffer(self, name: str, array: np.ndarray) -> None:
        setattr(self, name, torch.from_numpy(array).to(self.fitted_on.device))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        for name in self.data_buffers:
            incoming = state_dict.get(prefix + name)
            if isinstance(incoming, Tensor):
                current = self._buffers[name]
                self._buffers[name] = current.new_empty(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TrainRowsRecommender(FittedRecommender):
    """Keeps the binary training rows (CSR pattern) in buffers to build the users' input rows."""

    data_buffers = ("train_indptr", "train_indices")

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items)
        self.register_buffer("train_indptr", torch.zeros(n_users + 1, dtype=torch.int64))
        self.register_buffer("train_indices", torch.zeros(0, dtype=torch.int64))

    def fit(self, train: sp.csr_matrix) -> None:
        self.set_buffer("train_indptr", train.indptr.astype(np.int64))
        self.set_buffer("train_indices", train.indices.astype(np.int64))

    def user_csr(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """The training rows of ``users`` as CSR: row pointers (U+1,) and item indices, each
        row's items in the order of the fitted matrix (sorted)."""
        starts = self.train_indptr[users]
        counts = self.train_indptr[users + 1] - starts
        pointers = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        row = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        position = torch.arange(len(row), device=users.device) - pointers[:-1][row] + starts[row]
        return pointers, self.train_indices[position]

    def user_rows(self, users: Tensor, dtype: torch.dtype) -> Tensor:
        """Dense binary training rows (U, n_items) of ``users``."""
        pointers, items = self.user_csr(users)
        row = torch.repeat_interleave(
            torch.arange(len(users), device=users.device), pointers.diff()
        )
        rows = torch.zeros(len(users), self.n_items, dtype=dtype, device=users.device)
        rows[row, items] = 1.0
        return rows

    def score_rows(self, rows: Tensor) -> Tensor:
        """Scores (R, n_items) of users given by their binary item rows (R, n_items)."""
        raise NotImplementedError

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        self.require_fitted()
        return self.score_rows(self.user_rows(users, self.item_weights_dtype()))

    def item_weights_dtype(self) -> torch.dtype:
        return torch.float32

    def item_similarity(self, items: Tensor) -> Tensor:
        """The scores of a user who has only the query item: the item-item weights the model
        itself recommends with (item-kNN: the cosine similarities kept by its neighbourhoods;
        EASE: row i of B, the weights with which item i predicts every other item)."""
        self.require_fitted()
        rows = torch.zeros(len(items), self.n_items, dtype=self.item_weights_dtype())
        rows = rows.to(items.device)
        rows[torch.arange(len(items), device=items.device), items] = 1.0
        return self.score_rows(rows)


@register("item-knn", "item_knn", "knn")
class ItemKNN(TrainRowsRecommender):
    """Item-based kNN with cosine similarity (Sarwar et al. 2001; Deshpande & Karypis 2004).

    ``s_ij = x_i·x_j / (‖x_i‖‖x_j‖ + shrink)`` between the item columns of the binary training
    matrix. For every target item j only its ``neighbors`` most similar other items are kept (no
    self-similarity, no zero weights), and ``score(u, j) = Σ_i x_ui s_ij`` over those neighbours.
    The pruned weights are stored as a CSR matrix whose row j lists j's neighbours: O(n_items ·
    neighbors) memory (≈ 48 MB for 40k items and 100 neighbours) and one sparse GEMM per block of
    users. ``shrink`` > 0 damps similarities supported by few co-occurrences; its default, 10,
    is the setting of the validation grid closest to each development dataset's best (Last.fm,
    CiteULike-t, ml-1m: test NDCG@10 within 1.6 % of the tuned value on each, where ``shrink = 0``
    was 10.1 % below on CiteULike-t; docs/results.md, "Default against tuned").
    """

    name = "itemknn"
    data_buffers = (*TrainRowsRecommender.data_buffers, "neighbour_indices", "neighbour_weights")

    def __init__(
        self, n_users: int, n_items: int, *, neighbors: int = 100, shrink: float = 10.0
    ) -> None:
        if neighbors < 1:
            raise ConfigError(f"itemknn: neighbors must be positive, not {neighbors}")
        if shrink < 0:
            raise ConfigError(f"itemknn: shrink must be >= 0, not {shrink}")
        super().__init__(n_users, n_items)
        self.neighbors = neighbors
        self.shrink = shrink
        self.register_buffer("neighbour_indptr", torch.zeros(n_items + 1, dtype=torch.int64))
        self.register_buffer("neighbour_indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("neighbour_weights", torch.zeros(0))

    def fit(self, train: sp.csr_matrix) -> None:
        super().fit(train)
        norms = np.sqrt(np.asarray(train.sum(axis=0), dtype=np.float32).ravel())
        k = min(self.neighbors, self.n_items - 1)
        counts, indices, weights = [], [], []
        for rows, sims in gram_row_blocks(train):
            # Row j of the block holds the similarities of target item j (the Gram is symmetric).
            denominator = norms[rows, None] * norms[None, :] + self.shrink
            np.divide(sims, denominator, out=sims, where=denominator > 0)
            targets = np.arange(rows.start, rows.stop)
            sims[targets - rows.start, targets] = 0.0
            if k < self.n_items - 1:
                top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
                top.sort(axis=1)
            else:
                top = np.broadcast_to(np.arange(self.n_items), sims.shape)
            values = np.take_along_axis(sims, top, axis=1)
            keep = values > 0
            counts.append(keep.sum(axis=1))
            indices.append(top[keep])
            weights.append(values[keep])
        indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
        self.set_buffer("neighbour_indptr", indptr.astype(np.int64))
        self.set_buffer("neighbour_indices", np.concatenate(indices).astype(np.int64))
        self.set_buffer("neighbour_weights", np.concatenate(weights).astype(np.float32))

    def item_weights_dtype(self) -> torch.dtype:
        return self.neighbour_weights.dtype

    def score_rows(self, rows: Tensor) -> Tensor:
        with warnings.catch_warnings():  # torch warns once that CSR support is "beta"
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            by_target = torch.sparse_csr_tensor(
                self.neighbour_indptr,
                self.neighbour_indices,
                self.neighbour_weights,
                size=(self.n_items, self.n_items),
                check_invariants=False,  # built sorted and in range by fit()
            )
        return (by_target @ rows.T).T


def check_dense_item_matrix(
    n_items: int, max_items: int, owner: str = "ease", instead: str = "itemknn"
) -> None:
    """Refuse, in one line, a dense item-item matrix over more than ``max_items`` items (EASE's
    weights, and CML-EASE's through them) before anything is read or trained."""
    if n_items > max_items:
        gib = 4 * n_items**2 / 2**30
        raise ConfigError(
            f"{owner} stores a dense {n_items} × {n_items} item-item matrix ({gib:.1f} GiB, "
            f"about 3× that while fitting), above its limit of max_items={max_items} items; "
            f"raise max_items if the machine has the memory, or use {instead}"
        )


@register("easer", "ease-r")
class EASE(TrainRowsRecommender):
    """EASE^R (Steck, WWW 2019): a closed-form item-item linear autoencoder.

    ``P = (XᵀX + l2·I)⁻¹`` and ``B = I − P·diag(1/diag(P))``, i.e. ``B_ij = −P_ij / P_jj`` with a
    zero diagonal (an item may not predict itself); ``score(u, ·) = x_u B``. B is a dense
    n_items × n_items float32 matrix (1.6 GB at 20k items) and the inverse is computed in float64
    in place (3.2 GB at 20k items), so models above ``max_items`` items are refused up front
    rather than failing for memory after the data is loaded; raise ``max_items`` if the machine
    has the memory, or use ``itemknn``. ``l2`` 250 by default: the validation grid's best is 500
    on ml-1m and 100 on Last.fm and CiteULike-t, and 250 lands within 3% of each
    (docs/results.md).
    """

    name = "ease"
    data_buffers = (*TrainRowsRecommender.data_buffers, "weights")

    def __init__(
        self, n_users: int, n_items: int, *, l2: float = 250.0, max_items: int = 20_000
    ) -> None:
        if l2 <= 0:
            raise ConfigError(f"ease: l2 must be positive, not {l2}")
        check_dense_item_matrix(n_items, max_items)
        super().__init__(n_users, n_items)
        self.l2 = l2
        self.max_items = max_items
        self.register_buffer("weights", torch.zeros(0, 0))

    def fit(self, train: sp.csr_matrix) -> None:
        super().fit(train)
        n = self.n_items
        gram = np.empty((n, n), dtype=np.float64)
        for rows, block in gram_row_blocks(train):
            gram[rows] = block
        gram[np.diag_indices(n)] += self.l2
        precision = spd_inverse(gram)
        diagonal = precision.diagonal().copy()
        weights = np.empty((n, n), dtype=np.float32)
        width = max(1, BLOCK_ENTRIES // n)
        for start in range(0, n, width):
            rows = slice(start, min(start + width, n))
            weights[rows] = precision[rows] / -diagonal
        del gram, precision
        np.fill_diagonal(weights, 0.0)
        self.set_buffer("weights", weights)

    def item_weights_dtype(self) -> torch.dtype:
        return self.weights.dtype

    def score_rows(self, rows: Tensor) -> Tensor:
        return rows @ self.weights
