"""Training objectives.

The hinge objective of the CML family: for a user u, a positive p and a negative n,
``max(0, D(u, p) - D(u, n) + margin)`` with D the model's (squared) distance.

* ``negative_selection="all"``: every one of the k negatives forms its own triplet (the official
  code's single negative is the case k = 1);
* ``negative_selection="closest"``: original CML — only the negative nearest to the user counts;
* ``rank_weight=True``: original CML's WARP-style weight ``log(rank + 1)`` with
  ``rank ≈ n_items · #impostors / k``, impostors being negatives that violate the margin.

``reduction="mean"`` is the default; ``"sum"`` reproduces the official code (loss summed over the
batch), which with Adam only rescales the effective step early in training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import Objective

REDUCTIONS = ("mean", "sum")
NEGATIVE_SELECTIONS = ("all", "closest")


class HingeObjective(Objective):
    def __init__(
        self,
        margin: float = 0.5,
        reduction: str = "mean",
        negative_selection: str = "all",
        rank_weight: bool = False,
        n_items: int = 0,
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ConfigError(f"loss reduction must be one of {REDUCTIONS}, not {reduction!r}")
        if negative_selection not in NEGATIVE_SELECTIONS:
            raise ConfigError(
                f"negative selection must be one of {NEGATIVE_SELECTIONS}, "
                f"not {negative_selection!r}"
            )
        if rank_weight and n_items <= 0:
            raise ConfigError("rank_weight needs the number of items")
        self.margin = margin
        self.reduction = reduction
        self.negative_selection = negative_selection
        self.rank_weight = rank_weight
        self.n_items = n_items

    def hinge(self, positive_distance: Tensor, negative_distance: Tensor) -> Tensor:
        """Per-triplet hinge terms, shape (B, k), or (B, 1) with the closest negative."""
        violation = positive_distance.unsqueeze(1) - negative_distance + self.margin
        if self.negative_selection == "closest":
            terms = torch.relu(violation.max(dim=1, keepdim=True).values)
        else:
            terms = torch.relu(violation)
        if self.rank_weight:
            impostors = (violation > 0).sum(dim=1, keepdim=True).to(terms.dtype)
            rank = torch.floor(self.n_items * impostors / violation.shape[1])
            terms = terms * torch.log1p(rank)
        return terms

    def reduce(self, terms: Tensor) -> Tensor:
        return terms.sum() if self.reduction == "sum" else terms.mean()
