"""AdaCML: adaptive collaborative metric learning (DASFAA 2019), official ``attcml``, spec 3.4.

The user is translated towards each target t by an attention-weighted sum of the vectors of the
user's history pool, ``ũ_t = u + Σ_j a_j x_j`` with ``a = β-attention(⟨x_j, t⟩)``, and
``d(u, t) = ||ũ_t - t||²``. No relational memory.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from hlrm.models.base import History, TrainBatch, register
from hlrm.models.cml import squared_distances
from hlrm.models.memory import (
    Explanation,
    TranslationModel,
    admit_first_padding,
    effects_by_item,
    masked_attention,
    pool_effects,
    ranked,
    require_history,
)


@register("attcml")
class AdaCML(TranslationModel):
    """AdaCML.

    ``history_size`` / ``history_sampling``: the pools (spec 4.4); ``copy``: negatives reuse the
    positive's adapted user; ``beta``: exponent of the attention denominator. ``padding_quirk``:
    reproduce the official training mask, which admits one zero padding vector (adding exp(0) = 1
    to the denominator) whenever the pool is not full; as officially, scoring keeps exact masks.
    A user with an empty pool is scored like CML (the official code gives NaN).
    """

    name = "adacml"
    uses_history = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 100,
        max_norm: float = 1.0,
        history_size: int = 50,
        history_sampling: str = "random",
        copy: bool = False,
        beta: float = 1.0,
        padding_quirk: bool = False,
    ) -> None:
        super().__init__(n_users, n_items, dim, max_norm, copy)
        self.history_size = history_size
        self.history_sampling = history_sampling
        self.beta = beta
        self.padding_quirk = padding_quirk

    def translations(self, users: Tensor, history: History | None, targets: Tensor) -> Tensor:
        history = require_history(self, history)
        prefs = self.history_vectors(history)
        logits = self.rows(self.item_embeddings, targets) @ prefs.transpose(1, 2)
        return masked_attention(logits, history.mask.unsqueeze(1), self.beta) @ prefs

    def pair_distances(self, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        history = require_history(self, batch.history)
        if self.padding_quirk:
            quirk = History(history.items, admit_first_padding(history.mask))
            batch = replace(batch, history=quirk)
        return super().pair_distances(batch)

    def candidate_elements(self, candidates: int) -> int:
        """The (C, d) adapted relations and the (C, P) attention over the pool."""
        return candidates * (self.dim + self.history_size)

    def user_elements(self) -> int:
        """The pool (P, d) and its Gram matrix (P, P) per user."""
        return self.history_size * (self.dim + self.history_size) + self.dim

    @torch.no_grad()
    def score(
        self, users: Tensor, history: History | None = None, items: Tensor | None = None
    ) -> Tensor:
        """Exact factorised scoring: the attention logits ``⟨x_j, i⟩`` of an item block are one
        GEMM, and ``||u + aX - i||² = ||u - i||² + 2 a·(Xu) - 2 a·(Xi) + aᵀ(XXᵀ)a`` reuses them,
        so nothing of size (U, I_b, P, d) or (U, I_b, d) is built. ``items``: score only these
        item indices."""
        history = require_history(self, history)
        user = self.user_embeddings[users]
        prefs = self.history_vectors(history)
        n_users, n_prefs = prefs.shape[:2]
        user_side = (prefs @ user.unsqueeze(-1)).squeeze(-1)  # (U, P)
        gram = prefs @ prefs.transpose(1, 2)  # (U, P, P)
        flat = prefs.reshape(-1, self.dim)

        def block_distances(items: Tensor) -> Tensor:
            logits = (items @ flat.T).view(len(items), n_users, n_prefs)
            weights = masked_attention(logits, history.mask, self.beta)
            cross = (weights * (user_side - logits)).sum(-1)
            mixed = torch.einsum("iup,upq->iuq", weights, gram)
            quadratic = (mixed * weights).sum(-1)
            return (squared_distances(items, user) + 2.0 * cross + quadratic).clamp_min(0.0)

        return self.blockwise_scores(n_users, n_users * max(n_prefs, 1), block_distances, items)

    @torch.no_grad()
    def explain(self, user: int, items: Tensor, history: History) -> list[Explanation]:
        """The attention over the pool that adapts the user towards each item of ``items``
        (``"history_attention"``, the scoring masks), with each pool item's effect."""
        history = require_history(self, history)
        prefs = self.history_vectors(history)  # (1, P, d)
        logits = self.item_embeddings[items] @ prefs[0].T  # (T, P)
        weights = masked_attention(logits, history.mask, self.beta)
        valid = history.mask[0]
        labels = history.items[0][valid].tolist()
        effects = effects_by_item(history, pool_effects(self, user, items, history))
        return [
            Explanation(int(item), {"history_attention": ranked(labels, row[valid])}, effect)
            for item, row, effect in zip(items.tolist(), weights, effects, strict=True)
        ]


def broadcast_scores(model: AdaCML, users: Tensor, history: History) -> Tensor:
    """Reference scores computed like the official code (spec 3.4): the (U, I, P, d) products and
    the (U, I, d) adapted users are materialised. The test oracle and benchmark baseline of
    :meth:`AdaCML.score`."""
    with torch.no_grad():
        user = model.user_embeddings[users].unsqueeze(1)
        items = model.item_embeddings.unsqueeze(0)
        prefs = model.history_vectors(history).unsqueeze(1)  # (U, 1, P, d)
        logits = (prefs * items.unsqueeze(2)).sum(-1)  # (U, I, P)
        weights = masked_attention(logits, history.mask.unsqueeze(1), model.beta)
        adapted = user + (weights.unsqueeze(-1) * prefs).sum(2)
        return -(adapted - items).pow(2).sum(-1)
