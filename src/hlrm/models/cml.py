"""Collaborative Metric Learning (Hsieh et al., WWW 2017) as trained in the HLR paper.

Users and items live in one Euclidean space; the squared distance ``||u - i||²`` is the
dissimilarity and the score is its negative. Rows are projected into the unit ball after every
optimiser step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hlrm.errors import ConfigError
from hlrm.models.base import History, Recommender, TrainBatch, normal_init_, project_rows_, register


def squared_distances(users: Tensor, items: Tensor) -> Tensor:
    """``||u - i||²`` for every row of ``users`` (U, d) against every row of ``items`` (I, d).

    Expanded as ``|u|² + |i|² - 2 u·i`` so it is one GEMM; clamped at 0 against rounding.
    """
    user_sq = users.pow(2).sum(-1, keepdim=True)
    item_sq = items.pow(2).sum(-1)
    return (user_sq + item_sq - 2.0 * users @ items.T).clamp_min(0.0)


class EmbeddingModel(Recommender):
    """Shared parts of models with one user table and one item table in a metric space."""

    def __init__(self, n_users: int, n_items: int, dim: int, max_norm: float) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"the embedding size must be a positive integer, not {dim!r}")
        super().__init__(n_users, n_items)
        self.dim = dim
        self.max_norm = max_norm
        self.user_embeddings = nn.Parameter(normal_init_(Tensor(n_users, dim), dim))
        self.item_embeddings = nn.Parameter(normal_init_(Tensor(n_items, dim), dim))

    #: Set by the trainer for a row-sparse optimiser (``optimizer="lazy_adam"``): the loss then
    #: gathers table rows (:meth:`rows`) with row-sparse gradients, only the rows a batch used,
    #: instead of dense table-sized ones that are zero-filled and scattered into every step.
    sparse_gradients: bool = False

    def rows(self, table: Tensor, index: Tensor) -> Tensor:
        """``table[index]`` (index.shape + (d,)), with a row-sparse gradient when
        :attr:`sparse_gradients` is set and a gradient is being recorded."""
        if self.sparse_gradients and table.requires_grad and torch.is_grad_enabled():
            return F.embedding(index, table, sparse=True)
        return table[index]

    @torch.no_grad()
    def item_similarity(self, items: Tensor) -> Tensor:
        """Minus the squared distance between item embeddings: items close to each other in the
        space the model places users in (the translation models keep items in that space too)."""
        return -squared_distances(self.item_embeddings[items], self.item_embeddings)

    def after_step(self, rows: dict[str, Tensor] | None = None) -> None:
        if self.max_norm <= 0:
            return
        rows = rows or {}
        for name in ("user_embeddings", "item_embeddings"):
            table = getattr(self, name)
            if table.requires_grad:  # frozen (warm-started) tables stay bit-identical
                project_rows_(table, self.max_norm, rows.get(name))


@register()
class CML(EmbeddingModel):
    """CML. ``max_norm`` <= 0 disables the unit-ball projection.

    ``item_bias`` (an extension, off in the published model): a learned scalar per item is
    subtracted from every distance to it, ``d(u, i) - b_i`` (TransRec's item bias, He et al.,
    RecSys 2017), so popularity need not be encoded by crowding popular items near the centre
    of the ball. It starts at 0, so a model starts exactly as plain CML.
    """

    name = "cml"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 100,
        max_norm: float = 1.0,
        item_bias: bool = False,
    ):
        super().__init__(n_users, n_items, dim, max_norm)
        # Registered only when used, so checkpoints of the published model keep their keys.
        if item_bias:
            self.item_biases = nn.Parameter(torch.zeros(n_items))

    def _biased(self, distances: Tensor, items: Tensor | None) -> Tensor:
        """``distances`` minus the biases of ``items`` (all items when None; broadcasts)."""
        if not hasattr(self, "item_biases"):
            return distances
        return distances - (self.item_biases if items is None else self.item_biases[items])

    def pair_distances(self, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        user = self.rows(self.user_embeddings, batch.users)
        positive = (user - self.rows(self.item_embeddings, batch.positives)).pow(2).sum(-1)
        if batch.shared:  # one GEMM against the k shared negatives, no (B, k, d) gather
            negative = squared_distances(user, self.rows(self.item_embeddings, batch.negatives[0]))
        else:
            negatives = self.rows(self.item_embeddings, batch.negatives)
            negative = (user.unsqueeze(1) - negatives).pow(2).sum(-1)
        return self._biased(positive, batch.positives), self._biased(negative, batch.negatives)

    @torch.no_grad()
    def score_candidates(self, users: Tensor, history: History | None, items: Tensor) -> Tensor:
        """Minus the (biased) squared distances (U, C) of each user to its own candidates."""
        user = self.user_embeddings[users].unsqueeze(1)
        distances = (user - self.item_embeddings[items]).pow(2).sum(-1)
        return -self._biased(distances, items)

    def score(
        self, users: Tensor, history: History | None = None, items: Tensor | None = None
    ) -> Tensor:
        """Scores (U, I) of every item, or (U, len(items)) of the item indices ``items`` (the
        candidates of :mod:`hlrm.retrieval`)."""
        table = self.item_embeddings if items is None else self.item_embeddings[items]
        distances = squared_distances(self.user_embeddings[users], table)
        return -self._biased(distances, items)
