"""Top-k ranking metrics computed from a hit matrix, vectorised over users and cut-offs.

Inputs are ``hits`` (U, K) bool, ``hits[u, r - 1]`` telling whether the item at rank ``r`` of
user ``u``'s list is one of the user's relevant (held-out) items ``T_u``, and ``n_relevant`` (U,)
``= |T_u| >= 1``. A padded list position (fewer than K recommendable items) is simply a miss, so
every ``@k`` value divides by ``k`` where its definition says so. ``h_r`` below is ``hits[u, r-1]``
and every sum runs over ``r = 1..k``.

Standard definitions (the textbook ones, what most libraries report):

* ``precision@k`` = ``Σ h_r / k``
* ``recall@k``    = ``Σ h_r / |T_u|``
* ``hit@k``       = 1 if any ``h_r`` else 0
* ``map@k``       = ``Σ_{h_r=1} precision@r / min(|T_u|, k)`` — AP normalised by the number of
  hits a perfect list could hold, so a perfect list scores 1
* ``mrr@k``       = ``1 / r`` of the FIRST hit, 0 without a hit
* ``ndcg@k``      = ``DCG / IDCG`` with ``DCG = Σ h_r / log2(r + 1)`` and the ideal list holding
  ``min(|T_u|, k)`` hits at the top

Variants of the official HLR code (``huitre``, models-spec §5), under their own names so
published numbers can be reproduced without being mistaken for the standard ones:

* ``paper_map@k``     = ``Σ_{h_r=1} precision@r / k`` (normalised by the list length)
* ``paper_mrr@k``     = ``Σ_{h_r=1} 1 / r`` (sum over ALL hits; can exceed 1)
* ``paper_hitrate@k`` = the recall formula (the code's "hitrate" is not a 0/1 hit)
* ``global_ndcg@k``   = ``ndcg@k`` (the code's "global" NDCG, the one the paper reports)
* ``local_ndcg@k``    = ``DCG`` over an ideal made of the list's own hits sorted to the top. It is
  undefined for a user without hits: the per-user value is NaN, and averages (see
  :func:`hlrm.evaluation.protocol.evaluate`) skip NaN, i.e. run over the users with at least one
  hit only, as the official code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STANDARD_METRICS = ("precision", "recall", "hit", "map", "mrr", "ndcg")
PAPER_METRICS = ("paper_map", "paper_mrr", "paper_hitrate", "global_ndcg", "local_ndcg")
METRICS = STANDARD_METRICS + PAPER_METRICS


def ranking_metrics(
    hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-user values (float64, shape (U,)) of every metric in :data:`METRICS` at every k.

    Keys are ``"<metric>@<k>"``. A k above ``K`` counts the ranks beyond the list as misses
    (the caller passes all of a list: a cut-off larger than the catalogue); every
    ``n_relevant`` must be ``>= 1`` (a user with nothing to find has no recall or NDCG and is
    not evaluated).
    """
    hits = np.asarray(hits, dtype=bool)
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    if hits.ndim != 2 or n_relevant.shape != (hits.shape[0],):
        raise ValueError(
            f"hits must be (U, K) and n_relevant (U,), got {hits.shape} and {n_relevant.shape}"
        )
    depth = hits.shape[1]
    if depth < 1 or any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1 and the lists non-empty, got {list(ks)}")
    if (n_relevant < 1).any():
        raise ValueError("every user needs at least one relevant item")

    h = hits.astype(np.float64)
    ranks = np.arange(1, depth + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    # Running sums over ranks: entry r-1 of each is the value "@r", so every k is one column.
    n_hits = np.cumsum(h, axis=1)
    precision_sum = np.cumsum(h * n_hits / ranks, axis=1)  # Σ_{h_r=1} precision@r
    reciprocal_sum = np.cumsum(h / ranks, axis=1)
    dcg = np.cumsum(h * discount, axis=1)
    # ideal[n - 1] = DCG of n hits at the top, for n up to the most hits any cut-off allows
    ideal_depth = max(depth, min(max(ks), int(n_relevant.max(initial=1))))
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, ideal_depth + 2, dtype=np.float64)))
    any_hit = hits.any(axis=1)
    first_hit_rank = np.where(any_hit, hits.argmax(axis=1) + 1, depth + 1)

    out: dict[str, np.ndarray] = {}
    for k in ks:
        last = min(k, depth) - 1  # the running sums stop growing after the list ends
        found = n_hits[:, last]
        ideal_count = np.minimum(n_relevant, k).astype(np.int64)
        ndcg = dcg[:, last] / ideal[ideal_count - 1]
        local = np.full(len(found), np.nan)
        has_hit = found > 0
        local[has_hit] = dcg[has_hit, last] / ideal[found[has_hit].astype(np.int64) - 1]
        values = {
            "precision": found / k,
            "recall": found / n_relevant,
            "hit": (found > 0).astype(np.float64),
            "map": precision_sum[:, last] / ideal_count,
            "mrr": np.where(any_hit & (first_hit_rank <= k), 1.0 / first_hit_rank, 0.0),
            "ndcg": ndcg,
            "paper_map": precision_sum[:, last] / k,
            "paper_mrr": reciprocal_sum[:, last],
            "paper_hitrate": found / n_relevant,
            "global_ndcg": ndcg.copy(),
            "local_ndcg": local,
        }
        out.update({f"{name}@{k}": values[name] for name in METRICS})
    return out
