"""The evaluation protocol: which users are ranked, against what, and how values are averaged.

* **Target and mask.** ``target="test"`` ranks for the test split and masks train ∪ valid (what a
  user is known to have by test time); ``target="valid"`` ranks for the validation split and masks
  train only (model selection during training).
* **Users.** Candidates are the users with at least one target item. By default all are
  evaluated. ``max_users=n`` evaluates a fixed-seed random sample of n of them (quick checks on
  large datasets). ``cohorts=n`` is the HLR paper's protocol: candidates are shuffled with
  ``np.random.RandomState(seed)`` and cut into consecutive disjoint cohorts of ``cohort_size``;
  each value is the mean over cohorts of the per-cohort mean, reported with its standard deviation
  over cohorts (ddof=0) under ``"<key>_std"``. When there are fewer than ``n × cohort_size``
  candidates, the shuffled list yields as many cohorts as it fills, the last one possibly partial
  (so a small dataset still gets an honest, if smaller, cohort count: see ``protocol["cohorts"]``).
* **Ranking.** Exact full ranking, see :mod:`hlrm.evaluation.ranking`; one pass at the largest k,
  every smaller k reads a prefix of the same lists. History-based models get pools sampled from
  the masked matrix (a user's known items) with a generator seeded from ``seed``, so evaluation is
  deterministic.
* **Metrics.** Every metric of :mod:`hlrm.evaluation.metrics` at every k, averaged over users
  (``local_ndcg`` over users with at least one hit). Beyond accuracy, over each cohort's lists:
  ``coverage@k`` = distinct recommended items / n_items, and ``popularity@k`` = the paper's
  "Popularity", the median number of training interactions of the distinct recommended items.
* **Processes.** Under ``torchrun`` (:mod:`hlrm.distributed`) each rank ranks its own whole
  scoring blocks of the selected users; sums and counts (never means) are reduced exactly, so
  every rank gets the single-process metrics, and rank 0 gathers every user's row and list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from hlrm import distributed
from hlrm.data.matrix import SplitData
from hlrm.errors import ConfigError, DataError
from hlrm.evaluation.metrics import ranking_metrics
from hlrm.evaluation.ranking import PAD, ranking_block, top_k
from hlrm.models.base import Recommender
from hlrm.resources import check_ranking
from hlrm.training.history import HistorySampler

TARGETS = ("test", "valid")


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured, per user and aggregated, and how."""

    #: Flat keys "ndcg@10", "recall@20", ..., "coverage@10", "popularity@10"; with cohorts also
    #: "<key>_std", the standard deviation over cohorts.
    metrics: dict[str, float]
    #: One row per evaluated user: internal index ``user``, original ``user_id``, ``n_relevant``,
    #: ``cohort`` (with cohorts only) and every per-user metric.
    per_user: pd.DataFrame
    #: What was done: target split, masked splits, ks, user selection, cohorts, seed.
    protocol: dict[str, object]
    #: (U, max k) recommended item indices, best first, -1 padded, aligned with ``per_user``.
    recommendations: np.ndarray


def evaluate(
    model: Recommender,
    split: SplitData,
    *,
    ks: Sequence[int] = (10,),
    target: str = "test",
    cohorts: int | None = None,
    cohort_size: int = 10_000,
    seed: int = 2021,
    max_users: int | None = None,
    device: torch.device | str = "cpu",
    block_users: int | None = None,
    memory_mib: float | None = None,
) -> EvaluationResult:
    """Rank all items for the selected users of ``split`` and measure the ``target`` split.

    ``model`` must already live on ``device``. See the module docstring for the protocol;
    ``memory_mib`` bounds the largest scoring tensor (:func:`~hlrm.evaluation.ranking.top_k`).
    """
    ks = _check_options(ks, target, cohorts, cohort_size, max_users)
    truth = split.test if target == "test" else split.valid
    masked = ["train", "valid"] if target == "test" else ["train"]
    known = split.train_valid if target == "test" else split.train
    n_relevant = np.diff(truth.indptr)
    candidates = np.flatnonzero(n_relevant > 0)
    if len(candidates) == 0:
        raise DataError(
            f"{split.name}: the {target} split is empty, so there is no user to evaluate on"
        )

    users, cohort_of, n_cohorts = _select_users(candidates, cohorts, cohort_size, seed, max_users)
    # A list cannot hold more items than there are: ranks beyond them are misses, which
    # ranking_metrics counts exactly, so a cut-off above the catalogue costs nothing extra.
    depth = min(max(ks), split.n_items)
    check_ranking(len(users), depth, f"k={max(ks):,} over {len(users):,} users")
    # Under torchrun each rank ranks its own whole blocks of users: the blocks, and the pools
    # drawn for them, are the ones a single process ranks (see hlrm.distributed).
    block = ranking_block(model, split.n_items, block_users, memory_mib)
    mine = distributed.shard(len(users), unit=block)
    history_sampler, generator = None, None
    if model.uses_history:
        history_sampler = HistorySampler(
            known, model.history_size, model.history_sampling, device=device
        )
        generator = torch.Generator(device=device).manual_seed(seed)
        for start in range(0, mine.start, block):  # the pools the ranks before this one draw
            chunk = torch.from_numpy(users[start : min(start + block, mine.start)]).to(device)
            history_sampler.sample(chunk, generator=generator)
    recommendations = top_k(
        model,
        users[mine],
        known,
        depth,
        history_sampler=history_sampler,
        block_users=block,
        device=device,
        generator=generator,
        memory_mib=memory_mib,
    )

    per_user_values = ranking_metrics(
        _hit_matrix(recommendations, truth[users[mine]]), n_relevant[users[mine]], ks
    )
    per_cohort = _reduced_cohort_means(per_user_values, cohort_of[mine], n_cohorts)
    per_cohort.update(_beyond_accuracy(recommendations, cohort_of[mine], n_cohorts, ks, split))
    metrics: dict[str, float] = {}
    for key, values in per_cohort.items():
        metrics[key] = _mean_defined(values)
        if cohorts is not None:
            metrics[f"{key}_std"] = _std_defined(values)

    columns: dict[str, np.ndarray] = {
        "user": users[mine],
        "user_id": split.user_ids[users[mine]],
        "n_relevant": n_relevant[users[mine]],
    }
    if cohorts is not None:
        columns["cohort"] = cohort_of[mine]
    per_user = pd.DataFrame({**columns, **per_user_values})
    if distributed.active():  # rank 0 gathers every rank's users, in the single-process order
        shards = distributed.gather_to_main((per_user, recommendations))
        if shards is not None:
            per_user = pd.concat([frame for frame, _ in shards], ignore_index=True)
            recommendations = np.concatenate([lists for _, lists in shards])

    if cohorts is not None:
        selection = "cohorts"
    else:
        selection = "sample" if len(users) < len(candidates) else "all"
    protocol: dict[str, object] = {
        "target": target,
        "masked": masked,
        "ks": ks,
        "candidate_users": int(len(candidates)),
        "users": int(len(users)),
        "selection": selection,
        "cohorts": n_cohorts if cohorts is not None else None,
        "cohort_size": cohort_size if cohorts is not None else None,
        "max_users": max_users,
        "seed": seed,
        "n_items": split.n_items,
        "ranking": "exact full ranking; ties by lower item index; short lists padded with -1",
    }
    if distributed.active():
        protocol["processes"] = distributed.world_size()
    if model.uses_history:
        protocol["history"] = {
            "source": "+".join(masked),
            "size": model.history_size,
            "sampling": model.history_sampling,
        }
    return EvaluationResult(metrics, per_user, protocol, recommendations)


def _check_options(
    ks: Sequence[int],
    target: str,
    cohorts: int | None,
    cohort_size: int,
    max_users: int | None,
) -> list[int]:
    """Validate the options up front so a typo fails before any scoring; returns sorted ks."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"ks must be one or more positive cut-offs, got {ks}")
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {TARGETS}, not {target!r}")
    if cohorts is not None and max_users is not None:
        raise ConfigError("choose either cohorts (the paper's protocol) or max_users, not both")
    if cohorts is not None and (cohorts < 1 or cohort_size < 1):
        raise ConfigError(f"cohorts and cohort_size must be >= 1, got {cohorts}, {cohort_size}")
    if max_users is not None and max_users < 1:
        raise ConfigError(f"max_users must be >= 1, got {max_users}")
    return ks


def _select_users(
    candidates: np.ndarray,
    cohorts: int | None,
    cohort_size: int,
    seed: int,
    max_users: int | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(users, cohort index of each user, number of cohorts); without cohorts, one cohort."""
    if cohorts is not None:
        shuffled = candidates.copy()
        np.random.RandomState(seed).shuffle(shuffled)
        n_cohorts = min(cohorts, -(-len(shuffled) // cohort_size))
        users = shuffled[: n_cohorts * cohort_size]
        return users, np.arange(len(users)) // cohort_size, n_cohorts
    users = candidates
    if max_users is not None and max_users < len(candidates):
        users = np.sort(np.random.RandomState(seed).choice(candidates, max_users, replace=False))
    return users, np.zeros(len(users), dtype=np.int64), 1


def _hit_matrix(recommendations: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """(U, K) bool: whether each recommended item is in the user's row of ``truth`` (U rows).

    Each (row, item) pair becomes one int64 key, so membership is a single ``np.isin``.
    """
    n_items = truth.shape[1]
    rows = np.repeat(np.arange(truth.shape[0], dtype=np.int64), np.diff(truth.indptr))
    truth_keys = rows * n_items + truth.indices
    rec_keys = np.arange(len(recommendations), dtype=np.int64)[:, None] * n_items + recommendations
    return np.isin(rec_keys, truth_keys) & (recommendations != PAD)


def _reduced_cohort_means(
    per_user_values: dict[str, np.ndarray], cohort_of: np.ndarray, n_cohorts: int
) -> dict[str, np.ndarray]:
    """Per metric, the mean of each cohort's non-NaN values (NaN for a cohort without any), over
    the users of every rank: sums (:func:`hlrm.distributed.exact_parts`, added exactly) and
    counts are reduced, never means, so any sharding gives the single-process numbers."""
    keys = list(per_user_values)
    parts = np.zeros((len(keys), n_cohorts, distributed.PARTS))
    counts = np.zeros((len(keys), n_cohorts), dtype=np.int64)
    order = np.argsort(cohort_of, kind="stable")
    bounds = np.searchsorted(cohort_of[order], np.arange(n_cohorts + 1))
    for row, key in enumerate(keys):
        values = per_user_values[key][order]
        for c in range(n_cohorts):
            chunk = values[bounds[c] : bounds[c + 1]]
            defined = chunk[~np.isnan(chunk)]
            parts[row, c] = distributed.exact_parts(defined)
            counts[row, c] = len(defined)
    sums = distributed.gather_sums(parts)
    counts = distributed.all_sum(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return {key: means[row] for row, key in enumerate(keys)}


def _beyond_accuracy(
    recommendations: np.ndarray,
    cohort_of: np.ndarray,
    n_cohorts: int,
    ks: list[int],
    split: SplitData,
) -> dict[str, np.ndarray]:
    """Per-cohort ``coverage@k`` and ``popularity@k`` over the set of distinct recommended items.

    Per cohort, the best rank at which each item is recommended to anyone (one ``np.unique``
    over the lists read rank by rank), reduced over the ranks by a minimum; an item is in the
    top-k set of the cohort when that rank is below k.
    """
    best_rank = np.full((n_cohorts, split.n_items), np.iinfo(np.int32).max, dtype=np.int64)
    for c in range(n_cohorts):
        lists = recommendations[cohort_of == c]
        by_rank = lists.T.ravel()  # rank 1 of every list, then rank 2, ...
        items, first = np.unique(by_rank, return_index=True)
        real = items != PAD
        best_rank[c, items[real]] = first[real] // max(len(lists), 1)
    best_rank = distributed.all_min(best_rank)
    names = ("coverage", "popularity")
    out = {f"{name}@{k}": np.full(n_cohorts, np.nan) for k in ks for name in names}
    for c in range(n_cohorts):
        for k in ks:
            items = np.flatnonzero(best_rank[c] < k)
            out[f"coverage@{k}"][c] = len(items) / split.n_items
            if len(items):
                out[f"popularity@{k}"][c] = np.median(split.item_popularity[items])
    return out


def _mean_defined(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else float("nan")


def _std_defined(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.std()) if len(defined) else float("nan")
