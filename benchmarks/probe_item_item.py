"""Probe: would an item-item term over the user's history help a trained CML? No training: the
trained CML's scores plus a history term built from its own item embeddings,

    s(u, v) = -||u - v||² + β · T(u, v),

with T the mean of ``-||x_j - v||²`` over the history items x_j ("mean") or its soft maximum
``τ · logsumexp_j(-||x_j - v||² / τ)`` ("lse", the closest history item). β and τ are chosen on
validation (history = train items), the choice is reported on test (history = train ∪ valid).
docs/results.md quotes it:

    python benchmarks/probe_item_item.py RUN_DIR
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp
import torch

from hlrm.evaluation.protocol import evaluate
from hlrm.models.base import History, Recommender
from hlrm.models.cml import squared_distances
from hlrm.runs import Run


class HistoryTerm(Recommender):
    """A trained CML's scores plus β times the history term (see the module docstring)."""

    name = "cml+history-term"
    trainable = False

    def __init__(
        self, base: Recommender, history: sp.csr_matrix, beta: float, tau: float, mode: str
    ) -> None:
        super().__init__(base.n_users, base.n_items)
        self.base, self.history = base, history
        self.beta, self.tau, self.mode = beta, tau, mode

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        scores = self.base.score(users)
        items = self.base.item_embeddings.detach()
        for row, user in enumerate(users.tolist()):
            own = self.history.indices[self.history.indptr[user] : self.history.indptr[user + 1]]
            if len(own) == 0:
                continue
            distances = squared_distances(items[torch.from_numpy(own.astype(np.int64))], items)
            if self.mode == "lse":
                term = self.tau * torch.logsumexp(-distances / self.tau, dim=0)
            else:
                term = -distances.mean(0)
            scores[row] += self.beta * term
        return scores


def main() -> None:
    run = Run.open(sys.argv[1])
    split, base = run.split, run.model

    def ndcg(model: Recommender, target: str) -> float:
        return evaluate(model, split, ks=(10,), target=target).metrics["ndcg@10"]

    with torch.no_grad():
        print(f"cml: valid {ndcg(base, 'valid'):.4f} test {ndcg(base, 'test'):.4f}", flush=True)
        grid = [("mean", beta, 0.0) for beta in (0.25, 0.5, 1.0)] + [
            ("lse", beta, tau) for beta in (0.25, 0.5, 1.0, 2.0) for tau in (0.05, 0.1, 0.3)
        ]
        best = (-1.0, grid[0])
        for mode, beta, tau in grid:
            value = ndcg(HistoryTerm(base, split.train, beta, tau, mode), "valid")
            print(f"{mode} beta={beta} tau={tau}: valid {value:.4f}", flush=True)
            best = max(best, (value, (mode, beta, tau)))
        mode, beta, tau = best[1]
        test = ndcg(HistoryTerm(base, split.train_valid, beta, tau, mode), "test")
        print(f"best on validation: {mode} beta={beta} tau={tau}: test {test:.4f}")


if __name__ == "__main__":
    main()
