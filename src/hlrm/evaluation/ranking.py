"""Exact full ranking: every item is scored for every user, no sampled negatives.

Users are processed in blocks so memory stays bounded whatever the catalogue size: a block's
(users, n_items) score matrix is built on the scoring device, the user's excluded items (what the
user is already known to have: train, or train ∪ valid when ranking for test) are set to -inf
there, and ``torch.topk`` picks the best items without leaving the device.

Conventions, chosen so that lists do not depend on the device or the torch version:

* **Ties** are broken by the lower item index first. ``torch.topk`` alone leaves the order of
  equal scores unspecified (it differs between CPU and CUDA), which matters for models with many
  exact ties such as popularity.
* **Padding**: an item whose score is -inf (every excluded item, and anything a model rules out
  with -inf) is never recommended. A user with fewer than k such items gets a list padded with
  -1 at the end.
* NaN scores (a diverged model) raise :class:`~hlrm.errors.HlrmError` rather than produce
  meaningless lists.

Models with a ``pruned_scores(users, history, excluded, k)`` method (LRML, HLR, HLR++, see
:meth:`~hlrm.models.memory.MemoryTranslationModel.pruned_scores`) are scored exactly only on the
items that can reach the top k; the others get -inf, which is proved not to change any list.
``prune=False`` scores every item.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from hlrm.errors import HlrmError
from hlrm.models.base import History, Recommender, pool_rows
from hlrm.training.history import HistorySampler

#: Marks a list position left empty because the user has fewer than k recommendable items.
PAD = -1
#: Bytes per element of the budget: scores and intermediates are float32.
ELEMENT_BYTES = 4


def block_users_for(model: Recommender, n_items: int) -> int:
    """Users per ranking block: their (U, I) score matrix within ``model.block_elements``."""
    return max(1, model.block_elements // max(n_items, 1))


def ranking_block(
    model: Recommender, n_items: int, block_users: int | None, memory_mib: float | None
) -> int:
    """The users per block :func:`top_k_scored` ranks with these options. Sharded evaluation
    (:func:`hlrm.evaluation.protocol.evaluate` under torchrun) cuts its shards at multiples of
    it, so that every rank ranks exactly the blocks one process would."""
    if block_users:
        return block_users
    if memory_mib is None:
        return block_users_for(model, n_items)
    return max(1, max(1, int(memory_mib * 2**20) // ELEMENT_BYTES) // max(n_items, 1))


def _scores(model: Recommender, users: Tensor, history: History | None) -> Tensor:
    """``model.score`` of ``users`` in sub-blocks of at most ``model.max_block_users()`` users,
    so the scorer's per-user intermediates stay within the budget too."""
    cap = model.max_block_users() or len(users)
    if len(users) <= cap:
        return model.score(users, history)
    return torch.cat(
        [
            model.score(users[start : start + cap], pool_rows(history, slice(start, start + cap)))
            for start in range(0, len(users), cap)
        ]
    )


def top_k(
    model: Recommender,
    users: np.ndarray,
    exclude: sp.csr_matrix,
    k: int,
    *,
    history_sampler: HistorySampler | None = None,
    block_users: int | None = None,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    prune: bool = True,
    memory_mib: float | None = None,
) -> np.ndarray:
    """The k best items (int64 array (len(users), k), best first) for each user in ``users``;
    :func:`top_k_scored` with the options described there, without the scores."""
    return top_k_scored(
        model,
        users,
        exclude,
        k,
        history_sampler=history_sampler,
        block_users=block_users,
        device=device,
        generator=generator,
        prune=prune,
        memory_mib=memory_mib,
    )[0]


def top_k_scored(
    model: Recommender,
    users: np.ndarray,
    exclude: sp.csr_matrix,
    k: int,
    *,
    history_sampler: HistorySampler | None = None,
    block_users: int | None = None,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    prune: bool = True,
    memory_mib: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best items (int64 array (len(users), k), best first) for each user in ``users``,
    and their scores (float32, -inf where the list is padded with :data:`PAD`).

    ``exclude`` is a (n_users, n_items) CSR matrix whose row ``u`` lists the items never to
    recommend to ``u``. ``model`` must already live on ``device``. History-based models need
    ``history_sampler`` (its pools are drawn with ``generator``, so a seeded generator makes the
    lists reproducible). The model is scored in eval mode; its training flag and
    ``block_elements`` are restored after.
    ``prune``: use the model's exact pruned scorer where it has one. ``memory_mib``: the size of
    the largest tensor scoring may build (the model's ``block_elements``, 8 MiB by default);
    smaller budgets give smaller blocks, never different lists.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if model.uses_history and history_sampler is None:
        raise ValueError(f"{model.name} reads user histories: pass a history_sampler")
    if memory_mib is not None and memory_mib <= 0:
        raise ValueError(f"the scoring memory budget must be positive, not {memory_mib} MiB")
    users = np.asarray(users, dtype=np.int64)
    n_items = exclude.shape[1]
    depth = min(k, n_items)
    pruned_scores = getattr(model, "pruned_scores", None) if prune else None
    out = np.full((len(users), k), PAD, dtype=np.int64)
    out_scores = np.full((len(users), k), -np.inf, dtype=np.float32)
    was_training, elements = model.training, model.block_elements
    model.eval()
    try:
        block = ranking_block(model, n_items, block_users, memory_mib)
        if memory_mib is not None:
            model.block_elements = max(1, int(memory_mib * 2**20) // ELEMENT_BYTES)
        with torch.inference_mode():
            for start in range(0, len(users), block):
                chunk = users[start : start + block]
                chunk_t = torch.from_numpy(chunk).to(device)
                history = None
                if model.uses_history:
                    history = history_sampler.sample(chunk_t, generator=generator)
                scores = None
                if pruned_scores is not None:
                    excluded = _excluded(exclude[chunk], device)
                    scores = pruned_scores(chunk_t, history, excluded, depth)
                if scores is None:
                    scores = _scores(model, chunk_t, history)
                # A private float32 copy: masking writes into it, and a model may return a view of
                # its own buffers (popularity returns one expanded row).
                scores = scores.to(torch.float32, copy=True)
                if torch.isnan(scores).any():
                    raise HlrmError(f"{model.name} produced NaN scores; was training diverging?")
                _mask_(scores, exclude[chunk])
                values, items = top_items(scores, depth)
                items[torch.isneginf(values)] = PAD
                out[start : start + len(chunk), :depth] = items.cpu().numpy()
                out_scores[start : start + len(chunk), :depth] = values.cpu().numpy()
    finally:
        model.train(was_training)
        model.block_elements = elements
    return out, out_scores


def _excluded(exclude: sp.csr_matrix, device: torch.device | str) -> Tensor:
    """The block's ``exclude`` rows as a dense bool (rows, n_items) tensor on ``device``."""
    excluded = torch.zeros(exclude.shape, dtype=torch.bool, device=device)
    rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
    cols = exclude.indices.astype(np.int64)
    excluded[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = True
    return excluded


def _mask_(scores: Tensor, exclude: sp.csr_matrix) -> None:
    """Set ``scores[r, i] = -inf`` for every stored entry (r, i) of the block's ``exclude`` rows."""
    rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
    rows_t = torch.from_numpy(rows).to(scores.device)
    cols_t = torch.from_numpy(exclude.indices.astype(np.int64)).to(scores.device)
    scores[rows_t, cols_t] = float("-inf")


def top_items(scores: Tensor, depth: int) -> tuple[Tensor, Tensor]:
    """``topk`` with ties broken by lower item index; returns (values, items), both (B, depth).

    ``topk`` is exact about which values are selected, so only the order inside the selection and
    the choice among items tied with the last selected value can differ from the convention. The
    selection is re-sorted by (score desc, index asc) — cheap, it is (B, depth) — and only rows
    where the tie straddles the cut-off are recomputed over the full row.
    """
    values, items = torch.topk(scores, depth, dim=1)
    threshold = values[:, -1:]
    tied_total = (scores == threshold).sum(dim=1)
    tied_selected = (values == threshold).sum(dim=1)
    straddling = torch.nonzero(tied_total > tied_selected).squeeze(1)
    if len(straddling):
        rows = scores[straddling]
        cut = threshold[straddling]
        above = rows > cut
        tied = rows == cut
        room = depth - above.sum(dim=1, keepdim=True)
        chosen = above | (tied & (torch.cumsum(tied, dim=1, dtype=torch.int32) <= room))
        # Exactly `depth` entries per row are chosen; nonzero lists them by ascending index.
        items[straddling] = torch.nonzero(chosen)[:, 1].view(len(straddling), depth)
        values[straddling] = rows.gather(1, items[straddling])
    by_index = torch.argsort(items, dim=1)
    items, values = items.gather(1, by_index), values.gather(1, by_index)
    by_score = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, by_score), items.gather(1, by_score)
