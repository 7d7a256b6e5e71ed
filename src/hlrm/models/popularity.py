"""Popularity: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

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

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        return self.counts.unsqueeze(0).expand(len(users), -1)
