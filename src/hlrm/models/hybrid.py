"""CML-EASE, HLR-EASE and HLR++-EASE: a metric model plus an explicit item-item term, variants
of the CML family (not published models; HLR, HLR++ and CML stay as published).

Why they exist (docs/results.md, "An explicit item-item term"): HLR's history channel is meant to
let what a user had shape the distance to a candidate, but its attention stays uniform, and an
item-item term built from the CML's own item positions adds nothing (closeness to a user
already encodes closeness to their items). A *different* item-item representation does: EASE's
closed-form weights ``B`` (Steck, WWW 2019) added to a trained CML's scores raised test NDCG@10
on Last.fm and CiteULike-t, significantly, and added to a trained HLR on ml-1m as well. So the
score is

    s(u, i) = -d(u, i) + β · Σ_{j ∈ train(u)} B_ji,

with ``d`` the base model's distance (CML's ``||u - i||²``, HLR's ``||u + R - i||²``), ``B``
fitted from the training matrix in closed form (:class:`~hlrm.models.neighbors.EASE`, ``l2``)
and the base model trained exactly as itself (same recipe, same draws: with β = 0 the model *is*
that CML or HLR, bit for bit). β is not trained: the EASE term reproduces the training matrix it
was fitted on, so on training pairs it would win every softmax and β would grow without bound.
It is chosen after training on the validation split (``blend = None``: the grid
:func:`choose_blend`, by the run's selection metric), or fixed by the user (``blend = 1.0``). The
term is linear in the user's items, so its part of an explanation is exact: each training item j
contributes ``β · B_ji`` to the score of i.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import scipy.sparse as sp
import torch
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import History, Recommender, create_model, register
from hlrm.models.cml import CML
from hlrm.models.hlr import HLR, HLRPlusPlus
from hlrm.models.memory import Explanation
from hlrm.models.neighbors import EASE, check_dense_item_matrix

#: β values tried on validation after training (0 keeps the base model alone).
BLEND_GRID = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: While the largest β tried is the best, :func:`choose_blend` tries its double, up to this.
BLEND_LIMIT = 1024.0


def choose_blend(
    grid: tuple[float, ...], value_of: Callable[[float], float]
) -> tuple[float, dict[float, float]]:
    """The β of ``grid`` (not empty) with the best validation value ``value_of(β)``, the smallest
    on ties, and every value measured. While the largest β tried is the best, its double is tried
    too (up to :data:`BLEND_LIMIT`): the grid's edge is not taken for the optimum (on DiffNet's Yelp
    validation was still rising at 8, docs/results.md)."""
    values = {beta: value_of(beta) for beta in grid}

    def best() -> float:
        return max(values, key=lambda beta: (values[beta], -beta))

    while 0 < best() == max(values) and 2 * best() <= BLEND_LIMIT:
        values[2 * best()] = value_of(2 * best())
    return best(), values


class ItemItemTerm:
    """β times EASE's item-item scores added to a base model's score (the module docstring).
    Mixed in before the base model class, whose constructor it calls with the base options
    before building its own part, so the base model draws exactly its own weights."""

    item_item: EASE
    blend_fixed: bool
    blend_weight: Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        l2: float = 250.0,
        blend: float | None = None,
        max_items: int = 20_000,
        **options: Any,
    ) -> None:
        """``l2``: EASE's regularisation (its default); ``blend``: β, or None to choose it on
        validation after training (:func:`choose_blend`); ``max_items``: EASE's limit on the
        dense item-item matrix; ``options``: the base model's (the registry reads them from its
        constructor, :func:`hlrm.models.base.model_parameters`)."""
        base_name = super().name  # the base model's, after this mixin in the MRO
        if blend is not None and (
            isinstance(blend, bool)
            or not isinstance(blend, (int, float))
            or not 0 <= blend < float("inf")
        ):
            raise ConfigError(f"{self.name}: blend must be a number >= 0 or none, not {blend!r}")
        # named as the variant's, and the plain base model (no such limit) as the way out
        check_dense_item_matrix(n_items, max_items, f"{self.name}: its EASE term", base_name)
        super().__init__(n_users, n_items, **options)
        # No random draws after the base model's, so it starts (and trains) exactly like itself.
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
        """``β · x_u B`` (U, I): the sum of B's rows over each user's training items, as one
        sparse (CSR) × dense product. It reads only those rows (a dense x_u B multiplies the
        zeros too), and each row sums its items in the same order whoever shares the call, so
        a user's values do not depend on the batch (the pruned top-k scores groups of a few
        users)."""
        ease = self.item_item
        ease.require_fitted()
        crow, columns = ease.user_csr(users)
        with warnings.catch_warnings():  # torch warns once that CSR support is "beta"
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            rows = torch.sparse_csr_tensor(
                crow,
                columns,
                torch.ones(len(columns), dtype=ease.weights.dtype, device=users.device),
                size=(len(users), self.n_items),
                check_invariants=False,  # sorted and in range: built from the CSR of fit()
            )
        return self.blend_weight * (rows @ ease.weights)

    @torch.no_grad()
    def score(
        self, users: Tensor, history: History | None = None, items: Tensor | None = None
    ) -> Tensor:
        scores = super().score(users, history, items)
        if self.blend == 0.0:  # the base model alone, bit for bit (and no item-item rows built)
            return scores
        extra = self._item_item(users)
        return scores + (extra if items is None else extra[:, items])

    @torch.no_grad()
    def score_candidates(self, users: Tensor, history: History | None, items: Tensor) -> Tensor:
        scores = super().score_candidates(users, history, items)
        if self.blend == 0.0:
            return scores
        return scores + self._item_item(users).gather(1, items)

    def _item_item_effects(self, user: int, items: Tensor) -> list[dict[int, float]]:
        """Per item of ``items``, the exact contribution ``β · B_ji`` of each of the user's
        training items j (the items EASE reads): the item-item part of the score is their sum."""
        ease = self.item_item
        ease.require_fitted()
        start, end = int(ease.train_indptr[user]), int(ease.train_indptr[user + 1])
        owned = ease.train_indices[start:end]
        contributions = self.blend_weight * ease.weights[owned][:, items].T  # (T, n)
        owned_items = owned.tolist()
        return [dict(zip(owned_items, row.tolist(), strict=True)) for row in contributions]


@register("cml+ease", "cmlease")
class CMLEASE(ItemItemTerm, CML):
    """CML plus β times EASE's item-item scores. Options of :class:`~hlrm.models.cml.CML`, plus
    ``l2``, ``blend`` and ``max_items`` (:class:`ItemItemTerm`)."""

    name = "cml-ease"

    @torch.no_grad()
    def explain(
        self, user: int, items: Tensor, history: History | None = None
    ) -> list[Explanation]:
        """Per item, the exact contribution ``β · B_ji`` of each of the user's training items j
        (``history`` is not used): the item-item part of the score is their sum, the rest is the
        CML distance."""
        effects = self._item_item_effects(user, items)
        return [
            Explanation(int(item), {}, effects=effect)
            for item, effect in zip(items.tolist(), effects, strict=True)
        ]


class RelationItemItem(ItemItemTerm):
    """The item-item term on a history model (HLR, HLR++): their exact pruned top-k works on
    ``-score = distance - β · x_u B`` (the lower bounds of the distance shift by the exact
    item-item scores, :meth:`score_offsets`), and an explanation adds the term's exact
    contributions to the pool items' leave-one-out effects."""

    def score_offsets(self, users: Tensor) -> Tensor | None:
        return None if self.blend == 0.0 else self._item_item(users)

    @torch.no_grad()
    def explain(self, user: int, items: Tensor, history: History) -> list[Explanation]:
        """The base model's explanation (its attention over the pool) with, per history item,
        the leave-one-out effect on the base model's part of the score plus the exact
        ``β · B_ji`` of EASE's part: how much that item pushed the recommendation up through
        either term."""
        explained = super().explain(user, items, history)
        if self.blend == 0.0:
            return explained
        merged = []
        for explanation, term in zip(explained, self._item_item_effects(user, items), strict=True):
            effects = dict(explanation.effects or {})
            for item, value in term.items():
                effects[item] = effects.get(item, 0.0) + value
            merged.append(dataclasses.replace(explanation, effects=effects))
        return merged


@register("hlr+ease", "hlrease")
class HLREASE(RelationItemItem, HLR):
    """HLR plus β times EASE's item-item scores: HLR trained exactly as :class:`HLR` (its
    default two stages included), then β chosen on validation. Options of :class:`HLR`, plus
    ``l2``, ``blend`` and ``max_items`` (:class:`ItemItemTerm`)."""

    name = "hlr-ease"


@register("hlrpp-ease", "hlrppease", "hlr+++ease")
class HLRPlusPlusEASE(RelationItemItem, HLRPlusPlus):
    """HLR++ plus β times EASE's item-item scores: HLR++ trained exactly as
    :class:`~hlrm.models.hlr.HLRPlusPlus` (its default two stages included), then β chosen on
    validation. Options of HLR++, plus ``l2``, ``blend`` and ``max_items``
    (:class:`ItemItemTerm`)."""

    name = "hlr++-ease"


#: The item-item variant of each base model (:func:`item_item_variant`).
ITEM_ITEM_VARIANTS = {"cml": CMLEASE.name, "hlr": HLREASE.name, "hlr++": HLRPlusPlusEASE.name}


def item_item_variant(base: Recommender, train: sp.csr_matrix, **options: Any) -> ItemItemTerm:
    """A trained ``base`` (CML, HLR or HLR++) as its item-item variant, without training again:
    the variant's metric part trains bit for bit like the base model, so the base weights are
    the variant's, and EASE is fitted on ``train``. ``options``: the variant's own (``l2``,
    ``blend``); β stays 0 until chosen (:func:`choose_blend`) or given."""
    if base.name not in ITEM_ITEM_VARIANTS:
        known = ", ".join(ITEM_ITEM_VARIANTS)
        raise ConfigError(f"{base.name} has no item-item variant (only {known})")
    model = create_model(
        ITEM_ITEM_VARIANTS[base.name], base.n_users, base.n_items, **base.hparams, **options
    )
    missing = model.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert all(key == "blend_weight" or key.startswith("item_item.") for key in missing), missing
    model.prepare(train)
    return model.eval()
