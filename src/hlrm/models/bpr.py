"""BPR-MF (Rendle et al., UAI 2009) as the HLR paper's reference code trains it (spec 3.8).

The score is an inner product plus an item bias, ``x_ui = b_i + <e_u, e_i>``, and the loss is
``-log σ(x_up - x_un)`` for every (user, positive, negative) triplet plus L2 regularisation of the
rows the batch touches. The weights default to the reference code's effective values: its
configured values were never read (spec 3.8), so these defaults are what its numbers used.

Two deliberate departures from the reference code:

* no user bias: it never enters a score, so the loss only ever shrinks it towards its zero init and
  it cannot change a ranking;
* every term is per (user, positive, negative) triplet and reduced by the objective (mean or sum,
  as configured). The rows shared by the k negatives of a pair (the user and the positive) carry
  ``1/k`` of their regulariser in each of the k terms, so each row is regularised once per pair;
  with one negative and a summed reduction this is exactly the reference loss.

No unit-ball projection: BPR's norms are controlled by the regulariser, not by a constraint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hlrm.errors import ConfigError
from hlrm.models.base import (
    History,
    Objective,
    Recommender,
    TrainBatch,
    cosine_similarities,
    normal_init_,
    register,
)


@register("bpr-mf", "bprmf")
class BPR(Recommender):
    """BPR matrix factorisation.

    ``reg_user`` and ``reg_item`` weight the squared norms of the user and positive-item
    embeddings, ``reg_negative`` that of the negative item's embedding (the reference code uses a
    tenth of ``reg_item`` for it), ``reg_bias`` the squared biases of both items.
    """

    name = "bpr"
    #: BPR's loss is its own (the trainer's ``loss`` does not apply): one negative per pair.
    train_recipe: ClassVar[dict[str, Any]] = {"negatives": 1, "shared_negatives": False}

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 100,
        reg_user: float = 0.0025,
        reg_item: float = 0.0025,
        reg_negative: float = 0.00025,
        reg_bias: float = 0.001,
    ) -> None:
        if dim < 1:
            raise ConfigError(f"bpr: dim must be positive, not {dim}")
        if min(reg_user, reg_item, reg_negative, reg_bias) < 0:
            raise ConfigError("bpr: regularisation weights must be >= 0")
        super().__init__(n_users, n_items)
        self.dim = dim
        self.reg_user = reg_user
        self.reg_item = reg_item
        self.reg_negative = reg_negative
        self.reg_bias = reg_bias
        self.user_embeddings = nn.Parameter(normal_init_(Tensor(n_users, dim), dim))
        self.item_embeddings = nn.Parameter(normal_init_(Tensor(n_items, dim), dim))
        self.item_bias = nn.Parameter(Tensor(n_items).zero_())

    def loss(self, batch: TrainBatch, objective: Objective) -> Tensor:
        user = self.user_embeddings[batch.users]  # (B, d)
        positive = self.item_embeddings[batch.positives]  # (B, d)
        negative = self.item_embeddings[batch.negatives]  # (B, k, d)
        positive_bias = self.item_bias[batch.positives]  # (B,)
        negative_bias = self.item_bias[batch.negatives]  # (B, k)

        x_positive = positive_bias + (user * positive).sum(-1)
        x_negative = negative_bias + (user.unsqueeze(1) * negative).sum(-1)
        ranking = F.softplus(x_negative - x_positive.unsqueeze(1))  # = -log σ(x_up - x_un)

        shared = (
            self.reg_user * user.pow(2).sum(-1)
            + self.reg_item * positive.pow(2).sum(-1)
            + self.reg_bias * positive_bias.pow(2)
        )
        own = self.reg_negative * negative.pow(2).sum(-1) + self.reg_bias * negative_bias.pow(2)
        k = batch.negatives.shape[1]
        return objective.reduce(ranking + own + (shared / k).unsqueeze(1))

    @torch.no_grad()
    def item_similarity(self, items: Tensor) -> Tensor:
        """Cosine of the item factors: inner-product models leave the factor norms free (they
        carry popularity), so the angle is what says two items are liked by the same users."""
        return cosine_similarities(self.item_embeddings[items], self.item_embeddings)

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        return self.item_bias.unsqueeze(0) + self.user_embeddings[users] @ self.item_embeddings.T
