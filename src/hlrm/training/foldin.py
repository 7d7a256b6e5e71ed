"""Fold-in: recommendations for a user the model was not trained on, given their items.

The method: append one row to the user table (Normal(0, 1/√d) like any user), then fit only that
row with the model's own training loss — the same hinge against uniform negatives, the same
history pools for history-based models — while every other parameter stays frozen. The new user
therefore lands where training would have put them, without retraining the item side.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from hlrm.data.matrix import binary_csr
from hlrm.errors import DataError
from hlrm.models.base import Recommender, create_model, normal_init_, project_rows_
from hlrm.training.history import HistorySampler
from hlrm.training.losses import HingeObjective
from hlrm.training.sampler import NegativeSampler, PairBatches


def extend_train(train: sp.csr_matrix, items: np.ndarray) -> sp.csr_matrix:
    """``train`` with one extra row holding ``items``."""
    row = binary_csr(np.zeros(len(items), dtype=np.int64), items, (1, train.shape[1]))
    return sp.vstack([train, row], format="csr")


def fold_in_user(
    model: Recommender,
    train: sp.csr_matrix,
    items: np.ndarray,
    *,
    epochs: int = 100,
    lr: float = 0.05,
    margin: float = 0.5,
    negatives: int = 10,
    seed: int = 2021,
) -> tuple[Recommender, sp.csr_matrix]:
    """A copy of ``model`` with one more user (the last index) fitted to ``items``.

    Returns the extended model and the extended training matrix (to mask and to draw history).
    """
    items = np.unique(np.asarray(items, dtype=np.int64))
    if len(items) == 0:
        raise DataError("fold-in needs at least one known item")
    if items.min() < 0 or items.max() >= model.n_items:
        raise DataError("fold-in items must be known item indices")
    device = next(iter(model.state_dict().values())).device
    extended = create_model(model.name, model.n_users + 1, model.n_items, **model.hparams)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("user") and value.shape[:1] == (model.n_users,):
            new_row = normal_init_(torch.empty_like(value[:1]), value.shape[-1])
            value = torch.cat([value, new_row.to(value)], dim=0)
        state[key] = value
    extended.load_state_dict(state)
    extended.to(device)
    train_plus = extend_train(train, items)
    extended.prepare(train_plus)
    if not extended.trainable:
        return extended, train_plus

    for parameter in extended.parameters():
        parameter.requires_grad_(False)
    table = extended.user_embeddings
    table.requires_grad_(True)
    only_new = torch.zeros(len(table), 1, device=device)
    only_new[-1] = 1.0
    table.register_hook(lambda grad: grad * only_new)

    own_row = extend_train(sp.csr_matrix((model.n_users, model.n_items)), items)
    history = (
        HistorySampler(train_plus, extended.history_size, extended.history_sampling, device)
        if extended.uses_history
        else None
    )
    batches = PairBatches(
        own_row,
        NegativeSampler(train_plus, device),
        batch_size=len(items),
        n_negatives=negatives,
        history=history,
        device=device,
    )
    objective = HingeObjective(margin=margin)
    # Only the new row is constrained: re-projecting frozen rows could nudge them by rounding.
    max_norm = float(getattr(extended, "max_norm", 0.0))
    optimizer = torch.optim.Adam([table], lr=lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    extended.train()
    for _ in range(epochs):
        for batch in batches.epoch(generator):
            loss = extended.loss(batch, objective)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if max_norm > 0:
                project_rows_(table, max_norm)
    extended.eval()
    return extended, train_plus
