"""MF-ALS (Hu, Koren & Volinsky 2008) through the ``implicit`` library: the HLR paper's MF-ALS row.

The reference code fits ``implicit``'s ``AlternatingLeastSquares`` with 100 factors,
regularisation 30 (20 on Yelp) and 20 iterations on the binary training matrix and scores by inner
product (spec 3.9). Stored values are confidences, so with ``alpha = 1`` an observed entry weighs
as much as an unobserved one, as in the reference. Unlike the reference, whose ALS evaluation
excluded only train items, the evaluator masks train ∪ valid as for every other model.

``implicit`` is an optional dependency (``pip install "hlrm[als]"``) needed to fit only: the
factors live in buffers, so a saved ALS model is loaded and scored without it. The random
initialisation is seeded from ``torch.initial_seed()`` — the run's seed when the caller seeded
torch — so a fixed seed gives the same factors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import History, cosine_similarities, register
from hlrm.models.neighbors import FittedRecommender


@register("mf-als", "mf_als", "wals")
class ALS(FittedRecommender):
    """Implicit-feedback matrix factorisation by alternating least squares; ``score = <u, i>``.

    Defaults: regularisation 100 and confidence scale ``alpha`` 20, the best point of the
    validation grid on ml-1m and Last.fm (alpha 40 on CiteULike-t, docs/results.md); the HLR
    paper's setting (regularisation 30 or 20, alpha 1) is pinned in configs/hlr-paper/.
    """

    name = "als"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 100,
        regularization: float = 100.0,
        iterations: int = 20,
        alpha: float = 20.0,
    ) -> None:
        if dim < 1 or iterations < 1:
            raise ConfigError("als: dim and iterations must be positive")
        if regularization < 0 or alpha <= 0:
            raise ConfigError("als: regularization must be >= 0 and alpha > 0")
        super().__init__(n_users, n_items)
        self.dim = dim
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.register_buffer("user_factors", torch.zeros(n_users, dim))
        self.register_buffer("item_factors", torch.zeros(n_items, dim))

    def fit(self, train: sp.csr_matrix) -> None:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
            from threadpoolctl import threadpool_limits
        except ImportError:
            raise ConfigError(
                'model "als" needs the implicit library: pip install "hlrm[als]"'
            ) from None
        # implicit parallelises over users itself and asks for a single-threaded BLAS.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.dim,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=torch.initial_seed(),
            )
            model.fit(train, show_progress=False)
        self.set_buffer("user_factors", np.asarray(model.user_factors, dtype=np.float32))
        self.set_buffer("item_factors", np.asarray(model.item_factors, dtype=np.float32))

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        self.require_fitted()
        return self.user_factors[users] @ self.item_factors.T

    def item_similarity(self, items: Tensor) -> Tensor:
        """Cosine of the item factors (the angle, not the popularity-laden norm, as for BPR)."""
        self.require_fitted()
        return cosine_similarities(self.item_factors[items], self.item_factors)
