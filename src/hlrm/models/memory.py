"""Shared building blocks of the relational metric-learning models (LRML, HLR, HLR++, TransCF,
AdaCML): the latent relational memory, masked β-attention, the translation-model base class and
the exact factorised scorer (models spec, sections 2, 3 and 9).

Every model here scores with a translation: ``d(u, t) = ||u + r(u, t) - t||²`` where ``r`` is a
relation vector built from the user, the target and (for history models) the user's past items.
Training evaluates it for the few targets of each row (:meth:`TranslationModel.target_distances`);
each model's ``score`` uses the factorisation of spec section 9 and never materialises a
users × items × pool × d tensor, and each model module keeps a ``broadcast_scores`` function with
the official broadcast computation, the test oracle and benchmark baseline of ``score``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hlrm.errors import ConfigError
from hlrm.models.base import History, TrainBatch, normal_init_, pool_rows, project_rows_
from hlrm.models.cml import EmbeddingModel, squared_distances

#: ``"none"``: K and M are free; ``"slots"``: each key vector (column of K) and each memory slot
#: are clipped to the ball; ``"parity"``: the official ``clip_ram``, which clips the d coordinate
#: rows of K (stored d × N) instead of the key vectors, plus every memory slot (spec 2, 9).
CLIP_MODES = ("none", "slots", "parity")
Label = int | str


#: ``"normal"``: Normal(0, 1/sqrt(d)) memory slots (official); ``"zero"``: every slot is 0, so every
#: relation is the zero translation and a warm-started model scores exactly like its CML source
#: until training moves the memory.
MEMORY_INITS = ("normal", "zero")


class RelationMemory(nn.Module):
    """Latent relational attention memory (LRAM, spec 3.2): keys K (d × N) and slots M (N × d).

    ``relation(a, b) = softmax_N((a ⊙ b) K) M`` is a convex combination of the N memory slots,
    which is what makes the factorised scorer of spec section 9 exact.

    Logit scales (an extension, 1 in the published models): with unit-ball embeddings and keys
    drawn at 1/sqrt(d) the slot logits ``(a ⊙ b) K`` are of order 1/d, so every softmax over the
    slots, and the attention over relations built from them, stays uniform (docs/results.md).
    ``address_scale`` multiplies the slot logits (it is folded into the keys: :attr:`scaled_keys`)
    and ``attention_scale`` the attention logits of the models that attend over relations;
    ``learn_scales`` makes both trainable (stored as logarithms, so they stay positive).
    """

    def __init__(
        self,
        dim: int,
        n_slots: int = 20,
        clip: str = "none",
        *,
        init: str = "normal",
        address_scale: float = 1.0,
        attention_scale: float = 1.0,
        learn_scales: bool = False,
    ) -> None:
        super().__init__()
        if clip not in CLIP_MODES:
            raise ConfigError(f"clip must be one of {CLIP_MODES}, not {clip!r}")
        if n_slots < 1:
            raise ConfigError(f"n_slots must be >= 1, not {n_slots}")
        if init not in MEMORY_INITS:
            raise ConfigError(f"memory_init must be one of {MEMORY_INITS}, not {init!r}")
        if not (address_scale > 0 and attention_scale > 0):
            raise ConfigError("address_scale and attention_scale must be positive")
        self.clip = clip
        self.keys = nn.Parameter(normal_init_(torch.empty(dim, n_slots), dim))
        self.memory = nn.Parameter(normal_init_(torch.empty(n_slots, dim), dim))
        if init == "zero":
            with torch.no_grad():
                self.memory.zero_()
        # Registered only when used, so checkpoints of the published models keep their keys.
        self.scaled = learn_scales or address_scale != 1.0 or attention_scale != 1.0
        if self.scaled:
            log_scales = torch.tensor([math.log(address_scale), math.log(attention_scale)])
            if learn_scales:
                self.log_scales = nn.Parameter(log_scales)
            else:
                self.register_buffer("log_scales", log_scales)

    @property
    def n_slots(self) -> int:
        return self.memory.shape[0]

    @property
    def scales(self) -> tuple[float, float]:
        """The (address, attention) logit scales as numbers: ``exp(log_scales)`` computed as the
        scorers and the training loss compute it (in the parameters' dtype, so a float32 model's
        scales are the float32 factors its logits are multiplied by); (1, 1) when unscaled.
        The one place that decodes ``log_scales`` for readers outside the forward pass (the
        scorers' problem description, exports, the entropy benchmark)."""
        if not self.scaled:
            return 1.0, 1.0
        address, attention = self.log_scales.detach().exp().tolist()
        return address, attention

    @property
    def scaled_keys(self) -> Tensor:
        """The keys that address the memory: K times the address scale."""
        return self.keys * self.log_scales[0].exp() if self.scaled else self.keys

    def attention_logits(self, logits: Tensor) -> Tensor:
        """Attention logits ``⟨r, q⟩`` times the attention scale."""
        return logits * self.log_scales[1].exp() if self.scaled else logits

    def address(self, a: Tensor, b: Tensor) -> Tensor:
        """Slot weights ``softmax((a ⊙ b) K)`` (..., N); ``a`` and ``b`` broadcast."""
        return ((a * b) @ self.scaled_keys).softmax(-1)

    def relation(self, a: Tensor, b: Tensor) -> Tensor:
        """The relation vector ``address(a, b) @ M`` (..., d)."""
        return self.address(a, b) @ self.memory

    def clip_(self, max_norm: float) -> None:
        """Post-step clipping of K and M to norm ``max_norm`` according to ``clip``."""
        if self.clip == "none":
            return
        project_rows_(self.keys if self.clip == "parity" else self.keys.T, max_norm)
        project_rows_(self.memory, max_norm)


def masked_attention(logits: Tensor, mask: Tensor, beta: float = 1.0) -> Tensor:
    """β-attention ``exp(w_j) / (Σ_{k valid} exp(w_k))^β`` over the last axis (spec 3.4, 3.5).

    Evaluated as ``exp(w_j - m) · exp((1 - β) m) / (Σ_k exp(w_k - m))^β`` with m the row's
    largest valid logit, i.e. ``exp(w_j - β·logsumexp_valid(w))`` (spec 9) without the official
    overflow; the expression does not depend on m, so m carries no gradient. Masked slots get
    exactly 0; rows without a valid slot get all zeros and no NaN (also in the gradient).
    ``mask`` broadcasts against ``logits``.
    """
    if logits.shape[-1] == 0:
        return torch.zeros_like(logits)
    filled = logits.masked_fill(~mask.expand_as(logits), float("-inf"))
    peak = filled.amax(-1, keepdim=True).detach()
    peak = peak.masked_fill(peak == float("-inf"), 0.0)  # rows without a valid slot
    exponentials = torch.exp(filled - peak)
    total = exponentials.sum(-1, keepdim=True)  # >= 1 where a slot is valid (the peak's exp(0))
    # Rows without a valid slot divide by 1 instead of 0. Not clamp_min(1.0): a row with one
    # valid slot sums to exactly 1, and since torch 2.14 clamp passes no gradient at its bound,
    # which silently dropped the normaliser's gradient from every such row.
    total = total.masked_fill(total == 0, 1.0)
    return exponentials * torch.exp((1.0 - beta) * peak) / total.pow(beta)


def admit_first_padding(mask: Tensor) -> Tensor:
    """The official "+1" masks of AdaCML and HLR++ (spec 3.4, 3.6, 8): the first n_u + 1 slots of
    the padded width P are valid, so one padded slot is admitted whenever n_u < P."""
    padding = ~mask
    return mask | (padding & (padding.cumsum(-1) == 1))


@dataclass(frozen=True)
class Explanation:
    """Why an item was scored as it was.

    ``attention``: per attention module, (label, weight) sorted by decreasing weight; labels are
    item indices for history items and ``"user"`` / ``"target"`` / ``"padding"`` for the special
    slots of HLR and HLR++. Attention weights say where a module looked, not how much each entry
    moved the score (a uniform attention still mixes very different vectors), hence:

    ``effects`` (models with a history pool): per history item, the drop in this item's score
    when that item leaves the pool, ``score(pool) - score(pool without it)``
    (:func:`pool_effects`); positive = the item pushed this recommendation up.

    ``related`` (LRML, which reads no history): the user's items whose relation vector
    ``r(u, j)`` is closest (cosine) to this item's ``r(u, i)``, most similar first: the items
    the model relates the user to the same way as to this one.
    """

    item: int
    attention: dict[str, list[tuple[Label, float]]]
    effects: dict[int, float] | None = None
    related: list[tuple[int, float]] | None = None


@torch.no_grad()
def pool_effects(model: TranslationModel, user: int, items: Tensor, history: History) -> Tensor:
    """Leave-one-out effects (len(items), P) of the pool slots of ``user`` (history (1, P)) on
    the scores of ``items``: ``score(pool) - score(pool with slot j masked)``, 0 for slots that
    are not valid. One call of the model's own scorer on P + 1 pools (the full one, then each
    slot removed), restricted to ``items``."""
    width = history.items.shape[1]
    pools = history.items.expand(width + 1, width).clone()
    mask = history.mask.expand(width + 1, width).clone()
    slots = torch.arange(width, device=pools.device)
    pools[slots + 1, slots] = model.n_items  # the padding index
    mask[slots + 1, slots] = False
    users = torch.full((width + 1,), user, dtype=torch.long, device=pools.device)
    scores = model.score(users, History(pools, mask), items=items)  # (P + 1, T)
    effects = (scores[:1] - scores[1:]).T  # (T, P)
    return effects.masked_fill(~history.mask, 0.0)


def effects_by_item(history: History, effects: Tensor) -> list[dict[int, float]]:
    """Per target, {history item: effect} over the valid pool slots (a duplicate slot has the
    effect of any copy: the same vector)."""
    valid = history.mask[0]
    pool_items = history.items[0][valid].tolist()
    return [dict(zip(pool_items, row[valid].tolist(), strict=True)) for row in effects]


def ranked(labels: list[Label], weights: Tensor) -> list[tuple[Label, float]]:
    """Pairs (label, weight) sorted by decreasing weight, for :class:`Explanation`."""
    return sorted(zip(labels, weights.tolist(), strict=True), key=lambda pair: -pair[1])


class TranslationModel(EmbeddingModel):
    """Base of models with ``d(u, t) = ||u + r(u, t) - t||²`` (spec 3.2-3.6).

    Subclasses implement :meth:`translations`. With ``copy`` the negatives reuse the positive's
    relation (official ``copy`` option); scoring always computes each item's own relation.
    """

    #: Each negative needs its own relation (a shared translation would let the relation point
    #: at the positive), so the softmax gets a few per-example negatives rather than hundreds of
    #: shared ones (docs/results.md).
    train_recipe: ClassVar[dict[str, Any]] = {"negatives": 20, "shared_negatives": False}

    def __init__(
        self, n_users: int, n_items: int, dim: int, max_norm: float, copy: bool = False
    ) -> None:
        super().__init__(n_users, n_items, dim, max_norm)
        self.copy = copy

    def translations(self, users: Tensor, history: History | None, targets: Tensor) -> Tensor:
        """Relation vectors (B, T, d) of ``users`` (B,) towards the items ``targets`` (B, T)."""
        raise NotImplementedError

    def user_elements(self) -> int:
        """Elements the factorised scorer holds per user whatever its item block (the user's
        side of the block GEMM): with ``block_elements`` it caps the users of one call."""
        return self.dim

    def max_block_users(self) -> int:
        return max(1, self.block_elements // self.user_elements())

    def distance(self, difference: Tensor) -> Tensor:
        """Distance of ``u + r - t`` along the last axis; squared Euclidean unless overridden."""
        return difference.pow(2).sum(-1)

    def target_distances(self, users: Tensor, history: History | None, targets: Tensor) -> Tensor:
        """``d(u, t)`` (B, T) with each target's own relation: the scoring formula of the spec."""
        translated = self.rows(self.user_embeddings, users).unsqueeze(1) + self.translations(
            users, history, targets
        )
        return self.distance(translated - self.rows(self.item_embeddings, targets))

    def pair_distances(self, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        targets = torch.cat([batch.positives.unsqueeze(1), batch.negatives], 1)
        if self.copy:
            relation = self.translations(batch.users, batch.history, targets[:, :1])
            translated = self.rows(self.user_embeddings, batch.users).unsqueeze(1) + relation
            if batch.shared and type(self).distance is TranslationModel.distance:
                # squared distances to the shared negatives: one GEMM, no (B, k, d) gather
                anchor = translated.squeeze(1)
                positive = self.distance(anchor - self.rows(self.item_embeddings, batch.positives))
                shared = self.rows(self.item_embeddings, batch.negatives[0])
                return positive, squared_distances(anchor, shared)
            distances = self.distance(translated - self.rows(self.item_embeddings, targets))
        else:
            distances = self.target_distances(batch.users, batch.history, targets)
        return distances[:, 0], distances[:, 1:]

    def candidate_elements(self, candidates: int) -> int:
        """Elements :meth:`target_distances` holds per user for ``candidates`` targets: the
        (C, d) relations (models with more per target say so)."""
        return candidates * self.dim

    @torch.no_grad()
    def score_candidates(self, users: Tensor, history: History | None, items: Tensor) -> Tensor:
        """Scores (U, C) of each user's own candidates ``items`` (U, C) by the spec's formula
        per pair (:meth:`target_distances`, the computation training uses), which equals
        :meth:`score` up to float rounding: one batched computation per block of users, blocks
        kept within :attr:`block_elements` (:meth:`candidate_elements`)."""
        step = max(1, self.block_elements // max(1, self.candidate_elements(items.shape[1])))
        scores = self.item_embeddings.new_empty(items.shape)
        for start in range(0, len(users), step):
            rows = slice(start, start + step)
            pools = pool_rows(history, rows)
            scores[rows] = -self.target_distances(users[rows], pools, items[rows])
        return scores

    def history_vectors(self, history: History) -> Tensor:
        """Item vectors (R, P, d) of a pool; padding slots (index ``n_items``) are zero vectors,
        the official constant padding row (spec 3.4), whatever the mask says."""
        items = history.items
        # index_select: its backward (index_add) is several times faster than indexing's on CPU
        flat = items.clamp_max(self.n_items - 1).reshape(-1)
        table = self.item_embeddings
        gathered = self.rows(table, flat) if self.sparse_gradients else table.index_select(0, flat)
        vectors = gathered.view(*items.shape, self.dim)
        return vectors * (items != self.n_items).unsqueeze(-1).to(vectors.dtype)

    def blockwise_scores(
        self,
        n_users: int,
        per_item: int,
        block_distances: Callable[[Tensor], Tensor],
        items: Tensor | None = None,
    ) -> Tensor:
        """Scores (U, I) = minus ``block_distances(item block (I_b, d)) -> (I_b, U)`` over item
        blocks of at most ``block_elements // per_item`` items, so memory stays bounded.
        ``items`` (indices) restricts the columns to those items, in that order (the candidates
        of :meth:`MemoryTranslationModel.pruned_scores`)."""
        table = self.item_embeddings
        n_items = self.n_items if items is None else len(items)
        step = max(1, self.block_elements // max(1, per_item))
        scores = table.new_empty(n_users, n_items)
        for start in range(0, n_items, step):
            block = (
                table[start : start + step]
                if items is None
                else table.index_select(0, items[start : start + step])
            )
            scores[:, start : start + step] = -block_distances(block).T
        return scores


class MemoryTranslationModel(TranslationModel):
    """A translation model whose relations come from one shared :class:`RelationMemory`."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        max_norm: float,
        copy: bool,
        n_slots: int,
        clip: str,
        memory_init: str = "normal",
        address_scale: float = 1.0,
        attention_scale: float = 1.0,
        learn_scales: bool = False,
    ) -> None:
        super().__init__(n_users, n_items, dim, max_norm, copy)
        self.lram = RelationMemory(
            dim,
            n_slots,
            clip,
            init=memory_init,
            address_scale=address_scale,
            attention_scale=attention_scale,
            learn_scales=learn_scales,
        )

    #: Users whose candidates :meth:`pruned_scores` scores in one call, on the union of their
    #: candidate items: fewer, larger products against (user, item) pairs not needed. Users
    #: need few items each and share few of them, so 4 wastes less than 8: a batch of 64
    #: ml-1m users in 91 ms against 94 (benchmarks/recommend_latency.py --prune-group,
    #: docs/serving.md, 2026-12-01).
    prune_group: int = 4
    #: :meth:`pruned_scores` gives up (returns None: score every item) when more than this share
    #: of the allowed pairs would still need an exact score, where pruning costs more than it
    #: saves (grouped subsets are slower per pair than whole blocks): well-trained memories with
    #: large unclipped keys, whose softmax floors vanish (docs/performance.md).
    prune_limit: float = 0.5

    #: Pool vectors per user that address the memory when scoring (LRML: the user alone).
    scoring_pool: int = 1
    #: HLR / HLR++: ``"auto"`` (the Triton kernel on CUDA when installed, else plain),
    #: ``"plain"`` or ``"triton"``; see :data:`hlrm.models.relation_scoring.BACKENDS`.
    scoring_backend: str = "auto"
    #: HLR / HLR++: (users, items) per tile of the plain scorer; None: measured per machine
    #: (:func:`hlrm.models.tiling.choose_tiles`). Never changes a score, only its speed.
    scoring_tiles: tuple[int, int] | None = None

    def user_elements(self) -> int:
        """The (d, U·S·N) matrix of :class:`PoolAddressing`: d·S·N elements per user."""
        return self.dim * self.scoring_pool * self.lram.n_slots

    def after_step(self, rows: dict[str, Tensor] | None = None) -> None:
        super().after_step(rows)
        if self.max_norm > 0:
            self.lram.clip_(self.max_norm)

    def score(
        self, users: Tensor, history: History | None = None, items: Tensor | None = None
    ) -> Tensor:
        """Scores (U, I) of every item, or (U, len(items)) of the item indices ``items``."""
        raise NotImplementedError

    def candidate_elements(self, candidates: int) -> int:
        """The (C, S, N) addresses and the (d, C·N) target keys of one user."""
        return candidates * self.lram.n_slots * (self.dim + 2 * self.scoring_pool)

    def score_offsets(self, users: Tensor) -> Tensor | None:
        """Scores (U, I) that :meth:`score` adds to ``-distance`` for ``users`` (an item-item
        term, :mod:`hlrm.models.hybrid`), or None. :meth:`pruned_scores` prunes on
        ``distance - offset`` = ``-score``: the bounds shift by the offsets, which are exact."""
        return None

    def coefficient_bounds(
        self, users: Tensor, history: History | None
    ) -> CoefficientBounds | None:
        """What :meth:`score` is known to satisfy for ``users`` (see :class:`CoefficientBounds`),
        or None where :meth:`pruned_scores` should not prune. LRML keeps None: its exact score
        costs about what the bound does (one N-slot address per pair), so pruning cannot pay
        (measured 0.4-1.1× the plain scorer on ml-100k / ml-1m, docs/performance.md)."""
        return None

    @torch.no_grad()
    def pruned_scores(
        self, users: Tensor, history: History | None, excluded: Tensor, k: int
    ) -> Tensor | None:
        """Scores (U, I) equal to :meth:`score` on every item that can enter a user's top ``k``
        and -inf on items proved unable to; None where :meth:`coefficient_bounds` knows nothing
        or the bounds would leave more than ``prune_limit`` of the pairs to score.

        ``excluded`` (U, I) bool marks the items never recommended to a user. Every item gets a
        lower bound on its distance (:func:`distance_lower_bounds`, cost O(N) per pair against
        O((1+P)·N·d) for the exact score); each user's 2k items of smallest bound, its seeds,
        are scored with :meth:`score_candidates` (each user's own seeds in one batched call,
        first for one group of users, a probe that gives up cheaply); the k-th best caps the
        user's k-th best distance τ, and only items with bound <= τ + sqrt(eps)·(1 + τ) are
        scored exactly (the margin, 3.5e-4 relative in float32, is hundreds of times the
        rounding error of bound, seed score and score). A pruned item is therefore strictly
        farther than k items that are all scored exactly (each has bound <= its distance <= τ
        up to rounding): it can neither enter the list nor tie with its last entry, so
        ``torch.topk`` and the lower-index tie rule give the unpruned lists. Every kept score
        comes from :meth:`score` itself, on the union of the items ``prune_group`` users need,
        so it is computed by the unpruned arithmetic; the seeds' own scores serve only for τ.
        """
        probe = slice(0, self.prune_group)
        seeded = self._seeded(users[probe], pool_rows(history, probe), excluded[probe], k)
        if seeded is None or seeded[1].sum() > self.prune_limit * (~excluded[probe]).sum():
            return None
        scores, needed = seeded
        if len(users) > self.prune_group:  # the probe's groups are done: seed the others
            rest = slice(self.prune_group, None)
            others = self._seeded(users[rest], pool_rows(history, rest), excluded[rest], k)
            scores, needed = torch.cat([scores, others[0]]), torch.cat([needed, others[1]])
        for start in range(0, len(users), self.prune_group):
            rows = slice(start, start + self.prune_group)
            candidates = needed[rows].any(0).nonzero().squeeze(1)
            if len(candidates):
                pools = pool_rows(history, rows)
                scores[rows, candidates] = self.score(users[rows], pools, items=candidates)
        return scores

    def _seeded(
        self, users: Tensor, history: History | None, excluded: Tensor, k: int
    ) -> tuple[Tensor, Tensor] | None:
        """Scores (U, I), all -inf, and the mask (U, I) of the allowed items that need an exact
        score: bound <= τ + margin, with τ each user's k-th smallest ``-score`` (the distance
        minus any :meth:`score_offsets`) among its seeds (its 2k items of smallest bound);
        None without bounds."""
        bounds = self.coefficient_bounds(users, history)
        if bounds is None:
            return None
        lower = distance_lower_bounds(self, users, bounds)
        offsets = self.score_offsets(users)
        if offsets is not None:  # a term added to -distance: the bound of -score moves with it
            lower -= offsets
        lower.masked_fill_(excluded, math.inf)
        seeds = lower.topk(min(2 * k, self.n_items), dim=1, largest=False).indices
        # Only τ comes from these scores (per user, its own seeds: no union, no wasted pairs);
        # every item they let through, the seeds included, is scored by score() afterwards.
        seed_scores = self.score_candidates(users, history, seeds)
        seed_scores = seed_scores.masked_fill(excluded.gather(1, seeds), -math.inf)
        # +inf where fewer than k items are known: then every allowed item is needed
        tau = -seed_scores.topk(min(k, seeds.shape[1]), dim=1).values[:, -1:]
        margin = math.sqrt(torch.finfo(lower.dtype).eps)
        needed = (lower <= tau + margin * (1.0 + tau.abs())) & ~excluded
        return torch.full_like(lower, -math.inf), needed


def require_history(model: TranslationModel, history: History | None) -> History:
    """The pools a history model cannot score or train without."""
    if history is None:
        raise ValueError(f"{model.name} needs the users' history pools")
    return history


# Factorised scoring of LRML (spec 9); HLR and HLR++ have theirs in hlrm.models.relation_scoring.
# Block tensors are laid out (I_b, U, S, N): I_b items of the block, U users, S pool slots, N
# memory slots.


class PoolAddressing:
    """The pools of U users (U, S, d) prepared to address the memory for whole item blocks.

    ``e_i · (Z_{u,s} ⊙ K_n) = ((e_i ⊙ Z_{u,s}) K)_n``, so one GEMM of an item block with the
    (d, U·S·N) matrix of ``Z ⊙ K`` gives every slot logit (spec 9). The softmax is left
    unnormalised (the caller folds the normaliser into its batched products): reducing over
    the short N axis costs more than the GEMM on CPU. ``|logit| <= ||e_i|| ||z|| ||K_n||``
    (Cauchy-Schwarz), so when that bound keeps ``exp`` finite the usual max subtraction is
    skipped, which leaves the softmax unchanged; otherwise the maximum is subtracted per row.
    """

    def __init__(self, pool: Tensor, keys: Tensor, items: Tensor) -> None:
        """``pool`` (U, S, d), memory ``keys`` (d, N), ``items`` the item table to be scored."""
        n_users, n_pool, dim = pool.shape
        self.shape = (n_users, n_pool, keys.shape[1])
        self.matrix = (pool.unsqueeze(-1) * keys).permute(2, 0, 1, 3).reshape(dim, -1)
        bound = _largest_norm(items) * _largest_norm(pool) * _largest_norm(keys.T)
        self.shift = bool(bound > 0.5 * math.log(torch.finfo(pool.dtype).max))

    def exponentials(self, items: Tensor) -> Tensor:
        """``exp`` of the slot logits (I_b, U, S, N), up to a positive factor per (i, u, s) row."""
        logits = (items @ self.matrix).view(len(items), *self.shape)
        if self.shift:
            logits = logits - logits.amax(-1, keepdim=True)
        return logits.exp_()

    def addresses(self, items: Tensor) -> Tensor:
        """Normalised addresses ``softmax_N((e_i ⊙ Z_{u,s}) K)`` (I_b, U, S, N)."""
        exponentials = self.exponentials(items)
        return exponentials / exponentials.sum(-1, keepdim=True)


def _largest_norm(rows: Tensor) -> Tensor:
    return rows.norm(dim=-1).max() if rows.numel() else rows.new_zeros(())


def relation_distances(
    coefficients: Tensor, users: Tensor, items: Tensor, memory: Tensor
) -> Tensor:
    """``||u + b M - i||²`` (I_b, U) from coefficients ``b`` (I_b, U, N) as the quadratic form
    ``||u - i||² + 2 b·(M u) - 2 b·(M i) + bᵀ (M Mᵀ) b`` of spec 9 (no (I_b, U, d) tensor)."""
    user_side = users @ memory.T
    item_side = items @ memory.T
    cross = (coefficients * (user_side.unsqueeze(0) - item_side.unsqueeze(1))).sum(-1)
    quadratic = ((coefficients @ (memory @ memory.T)) * coefficients).sum(-1)
    return (squared_distances(items, users) + 2.0 * cross + quadratic).clamp_min(0.0)


# Exact pruning (:meth:`MemoryTranslationModel.pruned_scores`).

#: Largest (I_b, U, N) block of :func:`distance_lower_bounds` (4 MiB of float32).
BOUND_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class CoefficientBounds:
    """What is known of the coefficients b (R = b M) of the relations the scorer builds for the
    users (U,) it was made for: ``Σ_n b_n = mass[u]`` exactly and ``b_n >= floor(block)[i, u]``
    for every memory slot n and every item i of an item block (I_b, d).

    Every LRAM address is a softmax over N slots, and attention mixes addresses with weights
    summing to 1 (β = 1), hence the mass. A softmax of logits in [-L, L] gives every slot at
    least :func:`softmax_floor` (L), and ``|((e ⊙ z) K)_n| <= ||e|| · ||z ⊙ K_n||`` bounds L per
    item, hence the floor: with small logits the relation stays near the mean memory slot.
    """

    mass: Tensor
    floor: Callable[[Tensor], Tensor]


def softmax_floor(logit_bound: Tensor, n_slots: int) -> Tensor:
    """The smallest weight a softmax over ``n_slots`` logits in [-L, L] can give."""
    return 1.0 / (1.0 + (n_slots - 1) * torch.exp(2.0 * logit_bound))


def key_norms(pool: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
    """``max_{s valid, n} ||z_s ⊙ K_n||`` (U,) for pools (U, S, d) with mask (U, S): with item
    norms it bounds every slot logit ``(e ⊙ z_s) · K_n`` of the user's addresses (0: no slot)."""
    norms = (pool.pow(2) @ keys.pow(2)).sqrt()  # (U, S, N)
    valid = norms.masked_fill(~mask.unsqueeze(-1), 0.0)
    return valid.flatten(1).amax(1) if valid.numel() else pool.new_zeros(len(pool))


def distance_lower_bounds(
    model: MemoryTranslationModel, users: Tensor, bounds: CoefficientBounds
) -> Tensor:
    """Lower bounds (U, I) on ``||u + b M - e_i||²`` for every b allowed by ``bounds``.

    Write ``b = w·1 + c`` with w the floor, c >= 0 of sum ``λ = mass - N·w``. Then
    ``u + bM - e_i = x' + cM`` with ``x' = u - e_i + w·ΣM``, and ``cM`` lies in λ·conv(M), so
    ``t = x'·cM >= λ·μ`` with ``μ = min_n M_n·x'``. Over that half-space the smallest
    ``||x' + y||²`` is ``max(0, ||x'||² + λμ)² / ||x'||²`` when μ < 0; when μ >= 0 the bound
    ``||x'||² + 2λμ`` is kept (its square-form twin divides by ``||x'||²``, unsafe near 0).
    Only ``M u`` and ``M e_i`` (N values each) are needed per pair. The work is memory-bound, so
    items go in cache-sized blocks of at most 2^20 (I_b, U, N) values (faster than larger ones),
    fewer when the scorer's ``block_elements`` is smaller.
    """
    memory = model.lram.memory
    n_slots = memory.shape[0]
    user = model.user_embeddings[users]
    user_side = user @ memory.T  # (U, N)
    total = memory.sum(0)
    total_side = memory @ total  # (N,)
    lower = user.new_empty(len(users), model.n_items)
    step = max(1, min(model.block_elements, BOUND_BLOCK_ELEMENTS) // max(1, len(users) * n_slots))
    for start in range(0, model.n_items, step):
        items = model.item_embeddings[start : start + step]
        floor = bounds.floor(items)  # (I_b, U)
        spread = (bounds.mass - n_slots * floor).clamp_min(0.0)  # λ
        projections = user_side - (items @ memory.T).unsqueeze(1)  # M_n · (u - e_i), (I_b, U, N)
        shifted = squared_distances(items, user) + floor * (
            2.0 * projections.sum(-1) + floor * total.dot(total)
        )
        shifted = shifted.clamp_min(0.0)
        least = projections.addcmul_(floor.unsqueeze(-1), total_side).amin(-1)  # μ
        below = (shifted + spread * least).clamp_min(0.0).pow(2) / shifted.clamp_min(1e-30)
        above = shifted + 2.0 * spread * least
        lower[:, start : start + step] = torch.where(least < 0, below, above).T
    return lower
