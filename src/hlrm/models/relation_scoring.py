"""The exact factorised scorer of HLR and HLR++ (models spec, section 9), tile by tile.

A scoring call (:class:`RelationProblem`) is cut into tiles of a few users × a few hundred items.
Per user the slot logits of every pool entry against an item tile are one GEMM of the tile
(I_t, d) with the user's (d, S·N) matrix ``z_s ⊙ K_n``; exp, the slot normalisers, the attention
over the pool and the mixed coefficients ``b`` (I_t, U_t, N) follow, and the distance is the
quadratic form ``||u - i||² + 2 b·(M u) - 2 b·(M i) + bᵀ (M Mᵀ) b``. Nothing of size
users × items × pool × d is built, and the largest tensor of a tile, (I_t, U_t, S, N), stays
within the model's ``block_elements``.

**The same scores whatever the tiles.** Which tile shape is fastest differs between CPUs (a
shape ten times too slow on one AMD EPYC was the best on the Intel Xeon it was tuned on), so the
tiles are measured per machine (:mod:`hlrm.models.tiling`). For that choice never to change a
ranking, every score is computed by the same arithmetic in every tile:

* per-element operations and reductions along a fixed axis (their order does not depend on how
  many rows there are);
* batched products whose members have a fixed shape (``(S, N) @ (N, 2)``, ``(1, S) @ (S, N)``);
* every other product through :func:`stable_mm`, which gives the BLAS at least 16 rows and 16
  columns: MKL's small-matrix kernels (fewer rows or columns) sum in another order, so a 7-item
  tile would otherwise round differently from a 256-item one.

``tests/test_relation_scoring.py`` checks that scores are bit-identical across tile shapes,
user blocks and item subsets on the machine that runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hlrm.models.memory import masked_attention

#: Rows and columns below which BLAS libraries switch to small-matrix kernels (MKL 2024: fewer
#: than 12 rows or 16 columns change the summation order); :func:`stable_mm` pads up to it.
STABLE_SIZE = 16


def stable_mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for 2-D ``a`` (m, k) and ``b`` (k, n), with zero rows / columns added while m or
    n is below :data:`STABLE_SIZE`, so each entry is summed in the order of a large product
    whatever m and n are (the padding's entries are dropped)."""
    rows, cols = a.shape[0], b.shape[1]
    if rows < STABLE_SIZE:
        a = torch.cat([a, a.new_zeros(STABLE_SIZE - rows, a.shape[1])])
    if cols < STABLE_SIZE:
        b = torch.cat([b, b.new_zeros(b.shape[0], STABLE_SIZE - cols)], 1)
    product = a @ b
    return product[:rows, :cols] if rows < STABLE_SIZE or cols < STABLE_SIZE else product


@dataclass(frozen=True)
class RelationProblem:
    """One scoring call of HLR (``kind="hlr"``) or HLR++ (``"hlr++"``) for U users and I items.

    ``user`` (U, d); ``pool`` (U, S, d) and ``pool_mask`` (U, S): the pool of the user attention
    (HLR: ``[u; x_1..x_P]``, HLR++: ``x_1..x_P`` with its parity mask); ``keys`` (d, N): the
    scaled keys; ``memory`` (N, d); ``attention_scale``: factor of every attention logit;
    ``beta``; ``items`` (I, d): the vectors of the items to score; ``item_norm``: the largest
    item norm of the whole catalogue (it decides, per user, whether the slot softmax needs its
    maximum subtracted, so that decision does not depend on which items a call scores).
    HLR++ only: ``item_mask`` (U, P), the valid history slots of the item attention (its pool
    is ``[t; x_1..x_P]`` with the target always valid).
    """

    kind: str
    user: Tensor
    pool: Tensor
    pool_mask: Tensor
    keys: Tensor
    memory: Tensor
    attention_scale: float
    beta: float
    items: Tensor
    item_norm: float
    item_mask: Tensor | None = None

    @property
    def n_users(self) -> int:
        return self.user.shape[0]

    @property
    def n_items(self) -> int:
        return self.items.shape[0]

    @property
    def pool_width(self) -> int:
        return self.pool.shape[1]

    @property
    def n_slots(self) -> int:
        return self.keys.shape[1]

    def tile_elements(self, users: int, items: int) -> int:
        """Elements of the largest tensor of a (users, items) tile: its slot exponentials, and
        its users' (d, S·N) address matrix."""
        per_user = max(self.pool_width, 1) * self.n_slots
        return users * per_user * max(items, self.user.shape[1])


#: float32 exp overflows above 88.7; logits bounded by half of that need no max subtraction.
def _needs_shift(bound: Tensor, dtype: torch.dtype) -> Tensor:
    return bound > 0.5 * math.log(torch.finfo(dtype).max)


class Prepared:
    """What every tile of a problem shares: per-user and per-item sides of the quadratic form,
    queries, shift flags and (HLR++) the item-independent history addresses."""

    def __init__(self, problem: RelationProblem) -> None:
        p = problem
        memory = p.memory
        self.gram = stable_mm(memory, memory.T)  # (N, N)
        self.user_side = stable_mm(p.user, memory.T)  # M u, (U, N)
        self.item_side = stable_mm(p.items, memory.T)  # M i, (I, N)
        self.query = self.user_side * p.attention_scale
        self.user_sq = p.user.pow(2).sum(-1)
        self.item_sq = p.items.pow(2).sum(-1)
        key_norm = p.keys.norm(dim=0).max() if p.keys.numel() else p.keys.new_zeros(())
        empty = not p.pool.numel()
        pool_norm = p.user.new_zeros(len(p.user)) if empty else p.pool.norm(dim=-1).amax(-1)
        self.pool_shift = _needs_shift(p.item_norm * pool_norm * key_norm, p.user.dtype)
        if p.kind == "hlr++":
            user_norm = p.user.norm(dim=-1)
            self.target_shift = _needs_shift(p.item_norm * user_norm * key_norm, p.user.dtype)
            n_users, width, dim = p.pool.shape
            pairs = (p.user.unsqueeze(1) * p.pool).reshape(-1, dim)
            self.history_addresses = (
                stable_mm(pairs, p.keys).view(n_users, width, p.n_slots).softmax(-1)
            )  # (U, P, N): do not depend on the item
            self.item_logit_side = self.item_side * p.attention_scale
            ones = p.item_mask.new_ones(n_users, 1)
            self.full_item_mask = torch.cat([ones, p.item_mask], 1)  # (U, 1+P)


def _address_matrix(pool: Tensor, keys: Tensor) -> Tensor:
    """The (d, U_t·S·N) matrix ``z_s ⊙ K_n`` of pools (U_t, S, d): one GEMM of an item tile with
    it gives every slot logit ``((e_i ⊙ z_s) K)_n`` (spec 9)."""
    return (pool.unsqueeze(-1) * keys).permute(2, 0, 1, 3).reshape(pool.shape[2], -1)


def _slot_exponentials(items: Tensor, matrix: Tensor, shape: tuple, shift: Tensor) -> Tensor:
    """``exp((e_i ⊙ z_s) K)`` (I_t, U_t, S, N) for item vectors (I_t, d) and the pools' address
    ``matrix``, unnormalised; users flagged in ``shift`` get their row maximum subtracted."""
    logits = stable_mm(items, matrix).view(len(items), *shape)
    if bool(shift.any()):
        peaks = logits.amax(-1, keepdim=True)
        logits = torch.where(shift.view(1, -1, 1, 1), logits - peaks, logits)
    return logits.exp_()


def _pool_coefficients(exponentials: Tensor, query: Tensor, mask: Tensor, beta: float) -> Tensor:
    """``b = Σ_s α_s a_s`` (I_t, U_t, N) from the unnormalised addresses (I_t, U_t, S, N):
    ``α = masked_attention(a_s · q)`` with ``query`` (U_t, N) = ``M q`` scaled.

    One GEMM of every address row with the queries and a column of ones of every user of the
    tile gives ``a_s · q`` and the softmax normalisers (the diagonal user blocks are kept): with
    up to 8 users that is at most 16 columns, the width :func:`stable_mm` pads to anyway, and
    one GEMM of 16 columns ran 3× faster than a batched product per (item, user) with 2 columns
    (AMD EPYC, MKL). A batched product of fixed-shape members gives the mixture."""
    n_items, n_users, width, n_slots = exponentials.shape
    columns = torch.stack([query, torch.ones_like(query)], -1)  # (U_t, N, 2)
    columns = columns.permute(1, 0, 2).reshape(n_slots, 2 * n_users)
    every = stable_mm(exponentials.reshape(-1, n_slots), columns)
    every = every.view(n_items, n_users, width, n_users, 2)
    products = torch.diagonal(every, dim1=1, dim2=3).permute(0, 3, 1, 2)  # (I_t, U_t, S, 2)
    normalisers = products[..., 1]
    weights = masked_attention(products[..., 0] / normalisers, mask, beta) / normalisers
    return torch.matmul(weights.unsqueeze(-2), exponentials).squeeze(-2)


class _UserTile:
    """The users ``rows`` of a problem, ready to score item tiles: their address matrices are
    built once and reused by every item tile."""

    def __init__(self, problem: RelationProblem, prep: Prepared, rows: slice) -> None:
        self.p, self.prep, self.rows = problem, prep, rows
        self.user = problem.user[rows]
        pool = problem.pool[rows]
        self.shape = (len(self.user), pool.shape[1], problem.n_slots)
        self.matrix = _address_matrix(pool, problem.keys) if pool.shape[1] else None
        if problem.kind == "hlr++":
            self.target_matrix = _address_matrix(self.user.unsqueeze(1), problem.keys)

    def distances(self, cols: slice) -> Tensor:
        """Distances (I_t, U_t) of these users to the items ``cols`` of the problem."""
        p, prep, rows = self.p, self.prep, self.rows
        items = p.items[cols]
        n_items, n_users, n_slots = len(items), len(self.user), p.n_slots
        if self.matrix is not None:
            exponentials = _slot_exponentials(items, self.matrix, self.shape, prep.pool_shift[rows])
            coefficients = _pool_coefficients(
                exponentials, prep.query[rows], p.pool_mask[rows], p.beta
            )
        else:
            coefficients = items.new_zeros(n_items, n_users, n_slots)
        if p.kind == "hlr++":
            coefficients = coefficients + self._item_attention(items, cols)
        user_side, item_side = prep.user_side[rows], prep.item_side[cols]
        cross = (coefficients * (user_side.unsqueeze(0) - item_side.unsqueeze(1))).sum(-1)
        flat = coefficients.reshape(-1, n_slots)
        quadratic = (stable_mm(flat, prep.gram) * flat).sum(-1).view(n_items, n_users)
        dots = stable_mm(items, self.user.T)
        squared = prep.user_sq[rows] + prep.item_sq[cols].unsqueeze(1) - 2.0 * dots
        return (squared.clamp_min(0.0) + 2.0 * cross + quadratic).clamp_min(0.0)

    def _item_attention(self, items: Tensor, cols: slice) -> Tensor:
        """HLR++'s item attention coefficients (I_t, U_t, N): relations ``LRAM(u, y)`` of the
        pool ``[t; x_1..x_P]`` weighted by ``⟨·, t⟩``; the history addresses do not depend on
        t (computed once per call)."""
        p, prep, rows = self.p, self.prep, self.rows
        n_users, n_slots = len(self.user), p.n_slots
        shape = (n_users, 1, n_slots)
        target = _slot_exponentials(items, self.target_matrix, shape, prep.target_shift[rows])
        target = (target / target.sum(-1, keepdim=True)).squeeze(2)  # (I_t, U_t, N)
        side = prep.item_logit_side[cols]  # (I_t, N)
        history = prep.history_addresses[rows]  # (U_t, P, N)
        own = (target * side.unsqueeze(1)).sum(-1, keepdim=True)
        others = stable_mm(side, history.reshape(-1, n_slots).T)
        others = others.view(len(items), n_users, history.shape[1])
        weights = masked_attention(
            torch.cat([own, others], -1), prep.full_item_mask[rows], p.beta
        )  # (I_t, U_t, 1+P)
        mixed = torch.matmul(weights[..., 1:].unsqueeze(-2), history).squeeze(-2)
        return weights[..., :1] * target + mixed


@torch.no_grad()
def plain_scores(problem: RelationProblem, user_tile: int, item_tile: int) -> Tensor:
    """Scores (U, I) of ``problem`` (minus the distances) in tiles of ``user_tile`` users ×
    ``item_tile`` items; the same values, bit for bit, whatever the tile sizes."""
    prep = Prepared(problem)
    n_users, n_items = problem.n_users, problem.n_items
    scores = problem.items.new_empty(n_users, n_items)
    for start in range(0, n_users, user_tile):
        rows = slice(start, start + user_tile)
        tile = _UserTile(problem, prep, rows)
        for first in range(0, n_items, item_tile):
            cols = slice(first, first + item_tile)
            scores[rows, cols] = -tile.distances(cols).T
    return scores


#: ``"auto"``: the Triton kernel on CUDA when ``triton`` is installed, else the plain scorer;
#: ``"plain"``: always the tiled PyTorch scorer; ``"triton"``: always the kernel (on the CPU
#: only under Triton's interpreter, ``TRITON_INTERPRET=1``: the tests).
BACKENDS = ("auto", "plain", "triton")


def triton_installed() -> bool:
    """Whether ``triton`` can be imported, without importing it."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def resolve_backend(requested: str, device: torch.device) -> str:
    """``"plain"`` or ``"triton"`` for ``requested`` (see :data:`BACKENDS`); ``"auto"`` defers
    to ``HLRM_SCORING_BACKEND`` when that is set."""
    import os

    choice = requested
    if choice == "auto":
        choice = os.environ.get("HLRM_SCORING_BACKEND", "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        from hlrm.errors import ConfigError

        raise ConfigError(f"the scoring backend must be one of {BACKENDS}, not {choice!r}")
    if choice == "auto":
        return "triton" if device.type == "cuda" and triton_installed() else "plain"
    return choice


def score_relations(
    problem: RelationProblem,
    budget: int,
    backend: str = "auto",
    tiles: tuple[int, int] | None = None,
) -> Tensor:
    """Scores (U, I) of ``problem`` with the chosen backend; the plain scorer runs in ``tiles``
    (default: measured for this machine, :func:`hlrm.models.tiling.choose_tiles`) whose largest
    tensors stay within ``budget`` elements."""
    if resolve_backend(backend, problem.user.device) == "triton":
        from hlrm.kernels.relation_triton import triton_scores

        return triton_scores(problem)
    if tiles is None:
        from hlrm.models.tiling import choose_tiles

        tiles = choose_tiles(problem, budget)
    return plain_scores(problem, *tiles)
