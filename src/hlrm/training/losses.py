"""Training objectives over the distances of each user to its positive (B,) and negatives (B, k).

Every objective turns those distances into per-row terms (:meth:`Objective.terms`) and reduces
them (:meth:`Objective.reduce`). ``log_weights`` (B, k), when given, is each negative's log weight
in the loss: ``-inf`` removes a negative (a shared negative the user already has), and
``-log(n_items · q(n))`` corrects for negatives drawn from a non-uniform distribution q (the
importance weight that makes the sampled sum an estimate of the uniform one; 0 for uniform).

``HingeObjective`` — the CML family's objective, ``max(0, D(u, p) - D(u, n) + margin)``:

* ``negative_selection="all"``: every one of the k negatives forms its own triplet (the official
  code's single negative is the case k = 1);
* ``negative_selection="closest"``: original CML — only the negative nearest to the user counts;
* ``rank_weight=True``: original CML's WARP-style weight ``log(rank + 1)`` with
  ``rank ≈ n_items · #impostors / k``, impostors being negatives that violate the margin.

``SoftmaxObjective`` — sampled softmax (InfoNCE) over the logits ``-D / τ``: the cross-entropy of
the positive against itself and its k negatives,
``log(exp(-D(u,p)/τ) + Σ_n w_n exp(-D(u,n)/τ)) + D(u,p)/τ``. Unlike the hinge, whose gradient
vanishes as soon as a negative clears the margin, every negative keeps a gradient proportional
to its softmax weight, so many negatives make the hardest ones dominate (docs/results.md).

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
LOSSES = ("hinge", "softmax")


class ReducingObjective(Objective):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ConfigError(f"loss reduction must be one of {REDUCTIONS}, not {reduction!r}")
        self.reduction = reduction

    def reduce(self, terms: Tensor) -> Tensor:
        return terms.sum() if self.reduction == "sum" else terms.mean()


class HingeObjective(ReducingObjective):
    def __init__(
        self,
        margin: float = 0.5,
        reduction: str = "mean",
        negative_selection: str = "all",
        rank_weight: bool = False,
        n_items: int = 0,
    ) -> None:
        super().__init__(reduction)
        if negative_selection not in NEGATIVE_SELECTIONS:
            raise ConfigError(
                f"negative selection must be one of {NEGATIVE_SELECTIONS}, "
                f"not {negative_selection!r}"
            )
        if rank_weight and n_items <= 0:
            raise ConfigError("rank_weight needs the number of items")
        self.margin = margin
        self.negative_selection = negative_selection
        self.rank_weight = rank_weight
        self.n_items = n_items

    def terms(
        self,
        positive_distance: Tensor,
        negative_distance: Tensor,
        log_weights: Tensor | None = None,
    ) -> Tensor:
        """Per-triplet hinge terms, shape (B, k), or (B, 1) with the closest negative."""
        violation = positive_distance.unsqueeze(1) - negative_distance + self.margin
        if log_weights is not None:  # removed negatives violate nothing
            violation = violation.masked_fill(torch.isneginf(log_weights), -torch.inf)
        if self.negative_selection == "closest":
            terms = torch.relu(violation.max(dim=1, keepdim=True).values)
        else:
            terms = torch.relu(violation)
            if log_weights is not None:
                terms = terms * log_weights.exp()
        if self.rank_weight:
            impostors = (violation > 0).sum(dim=1, keepdim=True).to(terms.dtype)
            rank = torch.floor(self.n_items * impostors / violation.shape[1])
            terms = terms * torch.log1p(rank)
        return terms


class SoftmaxObjective(ReducingObjective):
    """Sampled softmax over ``-D / temperature``; one term per row (B,)."""

    def __init__(self, temperature: float = 0.35, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if not temperature > 0:
            raise ConfigError(f"the softmax temperature must be positive, not {temperature}")
        self.temperature = temperature

    def terms(
        self,
        positive_distance: Tensor,
        negative_distance: Tensor,
        log_weights: Tensor | None = None,
    ) -> Tensor:
        positive = -positive_distance.unsqueeze(1) / self.temperature
        negative = -negative_distance / self.temperature
        if log_weights is not None:
            negative = negative + log_weights
        return torch.logsumexp(torch.cat([positive, negative], 1), 1) - positive.squeeze(1)


def make_objective(
    loss: str,
    *,
    margin: float = 0.5,
    temperature: float = 0.35,
    reduction: str = "mean",
    negative_selection: str = "all",
    rank_weight: bool = False,
    n_items: int = 0,
) -> Objective:
    """The objective a training configuration names."""
    if loss == "hinge":
        return HingeObjective(margin, reduction, negative_selection, rank_weight, n_items)
    if loss == "softmax":
        if negative_selection != "all" or rank_weight:
            raise ConfigError("closest-negative selection and rank weights belong to the hinge")
        return SoftmaxObjective(temperature, reduction)
    raise ConfigError(f"loss must be one of {LOSSES}, not {loss!r}")
