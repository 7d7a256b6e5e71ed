"""Is the attention of a relation model used? Normalised entropies of its attention weights.

For a fixed-seed sample of test users, each user's top-k list is computed exactly as the evaluator
does (train ∪ valid masked, pools from train ∪ valid), and for every recommended item the model's
:meth:`explain` gives each attention module's weights over its valid entries. The normalised
entropy ``H(w) / log(n)`` of a module is 1 when its n weights are uniform — the attention then
carries no information and the explanation shown to a user means nothing — and 0 when one entry
takes all the weight. Modules with a single valid entry are skipped (their entropy is undefined).

Modules (see the models' ``explain``): ``memory`` (LRML: the slot address of the pair),
``user_attention`` (HLR, HLR++: over the user slot and history items), ``item_attention``
(HLR++). For LRML, HLR and HLR++ ``address`` adds the slot addresses ``softmax((t ⊙ z) K)`` of
the target against every valid pool vector z (the user and the history items), which decide
what each relation is made of.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hlrm.data.matrix import SplitData
from hlrm.evaluation.ranking import PAD, top_k
from hlrm.models.base import History, Recommender
from hlrm.training.history import HistorySampler


def normalised_entropy(weights: torch.Tensor) -> float | None:
    """``H(w) / log(n)`` of one weight vector (renormalised to sum 1); None when n < 2."""
    n = weights.numel()
    if n < 2:
        return None
    p = weights.double().clamp_min(0)
    p = p / p.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum().item()
    return entropy / math.log(n)


def attention_entropy(
    model: Recommender,
    split: SplitData,
    *,
    users: int = 200,
    k: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Mean normalised entropy of each attention module over the top-``k`` items of up to
    ``users`` test users; an empty dict for models without attention."""
    if not hasattr(model, "explain"):
        return {}
    known = split.train_valid
    candidates = np.flatnonzero(np.diff(split.test.indptr) > 0)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(candidates, size=min(users, len(candidates)), replace=False))
    device = next(iter(model.state_dict().values())).device
    sampler = (
        HistorySampler(known, model.history_size, model.history_sampling, device)
        if model.uses_history
        else None
    )
    generator = torch.Generator(device).manual_seed(seed)
    lists = top_k(model, chosen, known, k, history_sampler=sampler, device=device)
    totals: dict[str, list[float]] = {}

    def add(module: str, weights: torch.Tensor) -> None:
        value = normalised_entropy(weights)
        if value is not None:
            totals.setdefault(module, []).append(value)

    was_training = model.training
    model.eval()
    with torch.no_grad():
        for user, row in zip(chosen.tolist(), lists, strict=True):
            items = torch.from_numpy(row[row != PAD]).to(device)
            if not len(items):
                continue
            users_t = torch.tensor([user], device=device)
            history = sampler.sample(users_t, generator=generator) if sampler else None
            for explanation in model.explain(user, items, history):
                for module, pairs in explanation.attention.items():
                    add(module, torch.tensor([weight for _, weight in pairs]))
            memory = getattr(model, "lram", None)
            if memory is not None:
                for address in _addresses(model, users_t, items, history):
                    add("address", address)
    model.train(was_training)
    return {module: float(np.mean(values)) for module, values in sorted(totals.items())}


def _addresses(
    model: Recommender, users: torch.Tensor, items: torch.Tensor, history: History | None
) -> torch.Tensor:
    """Slot addresses (R, N) of each target item against each valid pool vector."""
    user = model.user_embeddings[users]  # (1, d)
    pool = user
    if history is not None:
        vectors = model.history_vectors(history)[0][history.mask[0]]
        pool = torch.cat([user, vectors], 0)  # (S, d)
    targets = model.item_embeddings[items]  # (T, d)
    addresses = model.lram.address(targets.unsqueeze(1), pool.unsqueeze(0))  # (T, S, N)
    return addresses.reshape(-1, addresses.shape[-1])
