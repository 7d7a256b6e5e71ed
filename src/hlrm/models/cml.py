"""Collaborative Metric Learning (Hsieh et al., WWW 2017) as trained in the HLR paper.

Users and items live in one Euclidean space; the squared distance ``||u - i||²`` is the
dissimilarity and the score is its negative. Rows are projected into the unit ball after every
optimiser step.
"""

from __future__ import annotations

from torch import Tensor, nn

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
        super().__init__(n_users, n_items)
        self.dim = dim
        self.max_norm = max_norm
        self.user_embeddings = nn.Parameter(normal_init_(Tensor(n_users, dim), dim))
        self.item_embeddings = nn.Parameter(normal_init_(Tensor(n_items, dim), dim))

    def after_step(self) -> None:
        if self.max_norm <= 0:
            return
        for table in (self.user_embeddings, self.item_embeddings):
            if table.requires_grad:  # frozen (warm-started) tables stay bit-identical
                project_rows_(table, self.max_norm)


@register()
class CML(EmbeddingModel):
    """CML. ``max_norm`` <= 0 disables the unit-ball projection."""

    name = "cml"

    def __init__(self, n_users: int, n_items: int, *, dim: int = 100, max_norm: float = 1.0):
        super().__init__(n_users, n_items, dim, max_norm)

    def pair_distances(self, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        user = self.user_embeddings[batch.users]
        positive = (user - self.item_embeddings[batch.positives]).pow(2).sum(-1)
        if batch.shared:  # one GEMM against the k shared negatives, no (B, k, d) gather
            negative = squared_distances(user, self.item_embeddings[batch.negatives[0]])
        else:
            negative = (user.unsqueeze(1) - self.item_embeddings[batch.negatives]).pow(2).sum(-1)
        return positive, negative

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        return -squared_distances(self.user_embeddings[users], self.item_embeddings)
