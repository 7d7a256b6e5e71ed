"""CML-EASE: CML plus an explicit item-item term, a variant of the CML family (not a published
model; HLR, HLR++ and CML stay as published).

Why it exists (docs/results.md, "An explicit item-item term"): HLR's history channel is meant to
let what a user had shape the distance to a candidate, but its attention stays uniform, and an
item-item term built from the CML's own item positions adds nothing (closeness to a user
already encodes closeness to their items). A *different* item-item representation does: EASE's
closed-form weights ``B`` (Steck, WWW 2019) added to a trained CML's scores raised test NDCG@10
on Last.fm and CiteULike-t, significantly. So the score is

    s(u, i) = -d_CML(u, i) + β · Σ_{j ∈ train(u)} B_ji,

with ``B`` fitted from the training matrix in closed form (:class:`~hlrm.models.neighbors.EASE`,
``l2``) and the CML part trained exactly as :class:`~hlrm.models.cml.CML` (same recipe, same
draws: with β = 0 the model *is* that CML, bit for bit). β is not trained: the EASE term
reproduces the training matrix it was fitted on, so on training pairs it would win every
softmax and β would grow without bound. It is chosen after training on the validation split
(``blend = None``: the grid :data:`BLEND_GRID`, by the run's selection metric), or fixed by the
user (``blend = 1.0``). The term is linear in the user's items, so an explanation is exact: each
training item j contributes ``β · B_ji`` to the score of i (:meth:`CMLEASE.explain`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import History, register
from hlrm.models.cml import CML
from hlrm.models.memory import Explanation
from hlrm.models.neighbors import EASE, check_dense_item_matrix

#: β values tried on validation after training (0 keeps the CML alone).
BLEND_GRID = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@register("cml+ease", "cmlease")
class CMLEASE(CML):
    """CML plus β times EASE's item-item scores. ``l2``: EASE's regularisation (its default);
    ``blend``: β, or None to choose it on validation after training (:data:`BLEND_GRID`);
    ``max_items``: EASE's limit on the dense item-item matrix. Other options are CML's."""

    name = "cml-ease"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 100,
        max_norm: float = 1.0,
        item_bias: bool = False,
        l2: float = 250.0,
        blend: float | None = None,
        max_items: int = 20_000,
    ) -> None:
        if blend is not None and (
            isinstance(blend, bool)
            or not isinstance(blend, (int, float))
            or not 0 <= blend < float("inf")
        ):
            raise ConfigError(f"cml-ease: blend must be a number >= 0 or none, not {blend!r}")
        super().__init__(n_users, n_items, dim=dim, max_norm=max_norm, item_bias=item_bias)
        # No random draws here, so the CML part starts (and trains) exactly like a CML.
        # named as cml-ease's, and plain CML (no such limit) as the way out
        check_dense_item_matrix(n_items, max_items, "cml-ease: its EASE term", "cml")
        self.item_item = EASE(n_users, n_items, l2=l2, max_items=max_items)
        self.blend_fixed = blend is not None
        self.register_buffer("blend_weight", torch.tensor(0.0 if blend is None else blend))

    @property
    def blend_grid(self) -> tuple[float, ...]:
        """The β values the trainer tries on validation; empty when β was fixed."""
        return () if self.blend_fixed else BLEND_GRID

    @property
    def blend(self) -> float:
        return float(self.blend_weight)

    def set_blend(self, beta: float) -> None:
        self.blend_weight.fill_(beta)

    def prepare(self, train) -> None:
        super().prepare(train)
        self.item_item.prepare(train)

    def _item_item(self, users: Tensor) -> Tensor:
        return self.blend_weight * self.item_item.score(users)

    @torch.no_grad()
    def score(
        self, users: Tensor, history: History | None = None, items: Tensor | None = None
    ) -> Tensor:
        scores = super().score(users, history, items)
        if self.blend == 0.0:  # the CML alone, bit for bit (and no item-item rows built)
            return scores
        extra = self._item_item(users)
        return scores + (extra if items is None else extra[:, items])

    @torch.no_grad()
    def score_candidates(self, users: Tensor, history: History | None, items: Tensor) -> Tensor:
        scores = super().score_candidates(users, history, items)
        if self.blend == 0.0:
            return scores
        return scores + self._item_item(users).gather(1, items)

    @torch.no_grad()
    def explain(
        self, user: int, items: Tensor, history: History | None = None
    ) -> list[Explanation]:
        """Per item, the exact contribution ``β · B_ji`` of each of the user's training items j
        (the items EASE reads; ``history`` is not used): the item-item part of the score is
        their sum, the rest is the CML distance."""
        ease = self.item_item
        ease.require_fitted()
        start, end = int(ease.train_indptr[user]), int(ease.train_indptr[user + 1])
        owned = ease.train_indices[start:end]
        contributions = self.blend_weight * ease.weights[owned][:, items].T  # (T, n)
        owned_items = owned.tolist()
        return [
            Explanation(int(item), {}, effects=dict(zip(owned_items, row.tolist(), strict=True)))
            for item, row in zip(items.tolist(), contributions, strict=True)
        ]
