"""LRML: Latent Relational Metric Learning (Tay, Tuan, Hui, WWW 2018), models spec 3.2.

Each (user, item) pair gets its own relation ``r = softmax((u ⊙ i) K) M`` from a latent relational
memory, and ``d(u, i) = ||u + r - i||²``. Defaults follow the official HLR-paper code (squared
distance, separate relation for the negative); ``copy`` and ``distance="l2" | "l1"`` reproduce the
first author's variants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import History, register
from hlrm.models.memory import (
    Explanation,
    MemoryTranslationModel,
    PoolAddressing,
    ranked,
    relation_distances,
)

DISTANCES = ("squared", "l2", "l1")
#: Added under the square root of the "l2" distance, as in Tay's LRML code (spec 3.2).
L2_EPSILON = 1e-3


@register()
class LRML(MemoryTranslationModel):
    """LRML.

    ``copy``: the negatives reuse the positive pair's relation (Tay's pairwise mode, the Yelp
    config). ``distance``: ``"squared"`` (official), ``"l2"`` = ``sqrt(||·||² + 1e-3)`` or
    ``"l1"`` (Tay's code), used in the loss and the score. ``clip``: see
    :data:`~hlrm.models.memory.CLIP_MODES`; ``"slots"`` by default because the unclipped memory
    of the official configuration overfits (ml-100k default run: NDCG@10 0.423 clipped, 0.299
    not, docs/results.md); the presets in configs/hlr-paper/ pin the published value.
    Extensions: ``memory_init`` and ``address_scale`` (:class:`~hlrm.models.memory.RelationMemory`).
    """

    name = "lrml"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 100,
        n_slots: int = 20,
        max_norm: float = 1.0,
        copy: bool = False,
        distance: str = "squared",
        clip: str = "slots",
        memory_init: str = "normal",
        address_scale: float = 1.0,
    ) -> None:
        if distance not in DISTANCES:
            raise ConfigError(f"distance must be one of {DISTANCES}, not {distance!r}")
        super().__init__(
            n_users,
            n_items,
            dim,
            max_norm,
            copy,
            n_slots,
            clip,
            memory_init=memory_init,
            address_scale=address_scale,
        )
        self.metric = distance

    def translations(self, users: Tensor, history: History | None, targets: Tensor) -> Tensor:
        user = self.rows(self.user_embeddings, users).unsqueeze(1)
        return self.lram.relation(user, self.rows(self.item_embeddings, targets))

    def distance(self, difference: Tensor) -> Tensor:
        if self.metric == "l1":
            return difference.abs().sum(-1)
        squared = difference.pow(2).sum(-1)
        return (squared + L2_EPSILON).sqrt() if self.metric == "l2" else squared

    @torch.no_grad()
    def score(
        self, users: Tensor, history: History | None = None, items: Tensor | None = None
    ) -> Tensor:
        """Factorised scoring (spec 9 with a single pool slot): the addresses of an item block
        come from one GEMM; squared and l2 distances use the quadratic form, l1 (not a quadratic
        form) materialises the block's relations (I_b, U, d) instead. ``items``: score only
        these item indices."""
        user = self.user_embeddings[users]
        addressing = PoolAddressing(user.unsqueeze(1), self.lram.scaled_keys, self.item_embeddings)
        memory = self.lram.memory

        def block_distances(items: Tensor) -> Tensor:
            coefficients = addressing.addresses(items).squeeze(2)
            if self.metric == "l1":
                translated = user + coefficients @ memory - items.unsqueeze(1)
                return translated.abs().sum(-1)
            squared = relation_distances(coefficients, user, items, memory)
            return (squared + L2_EPSILON).sqrt() if self.metric == "l2" else squared

        per_item = len(user) * (self.dim if self.metric == "l1" else self.lram.n_slots)
        return self.blockwise_scores(len(user), per_item, block_distances, items)

    @torch.no_grad()
    def explain(
        self, user: int, items: Tensor, history: History | None = None
    ) -> list[Explanation]:
        """For each item, the user's items (``history``: the user's items, (1, n)) whose relation
        ``r(u, j)`` is closest by cosine to the item's ``r(u, i)``, most similar first: LRML
        reads no history, but the relation is what sets its score apart from CML's, and a memory
        slot number means nothing to a person. Without ``history`` nothing is related."""
        if history is None or not bool(history.mask.any()):
            return [Explanation(int(item), {}, related=[]) for item in items.tolist()]
        user_vector = self.user_embeddings[user]
        owned = history.items[0][history.mask[0]]
        targets = self.lram.relation(user_vector, self.item_embeddings[items])  # (T, d)
        relations = self.lram.relation(user_vector, self.item_embeddings[owned])  # (n, d)
        similarity = F.normalize(targets, dim=-1) @ F.normalize(relations, dim=-1).T
        owned_items = owned.tolist()
        return [
            Explanation(int(item), {}, related=ranked(owned_items, row))
            for item, row in zip(items.tolist(), similarity, strict=True)
        ]


def broadcast_scores(model: LRML, users: Tensor, history: History | None = None) -> Tensor:
    """Reference scores computed like the official code (spec 3.2): the (U, I, N) addresses and
    (U, I, d) relations of every pair are materialised. The test oracle and benchmark baseline of
    :meth:`LRML.score`."""
    with torch.no_grad():
        user = model.user_embeddings[users].unsqueeze(1)
        items = model.item_embeddings.unsqueeze(0)
        return -model.distance(user + model.lram.relation(user, items) - items)
