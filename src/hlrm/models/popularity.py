"""Popularity: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import History, Recommender, register


@register("pop")
class Popularity(Recommender):
    name = "popularity"
    trainable = False

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items)
        self.register_buffer("counts", torch.zeros(n_items))

    def prepare(self, train: sp.csr_matrix) -> None:
        counts = np.asarray(train.sum(axis=0)).ravel()
        self.counts.copy_(torch.from_numpy(counts.astype(np.float32)))

    def item_similarity(self, items: Tensor) -> Tensor:
        """Refused: popularity ranks every item by its count alone, so "items like this one"
        would be the best sellers whatever the item; co-occurrence is item-kNN's job."""
        raise ConfigError(
            "popularity has no item-item similarity (it ranks by counts alone); use itemknn, "
            "ease or an embedding model for similar items"
        )

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        return self.counts.unsqueeze(0).expand(len(users), -1)
