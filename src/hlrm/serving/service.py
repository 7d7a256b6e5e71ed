"""What the server answers, without the web framework: one loaded run, plain dicts out.

Every method here is synchronous and touches the model; the app calls them from its single
scoring thread, so the model is never used by two threads at once. Ids arrive as text and are
looked up in the run's id maps before anything is scored: an unknown id is an
:class:`~hlrm.errors.UnknownIdError` (HTTP 404), never a half-computed batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

import hlrm
from hlrm import runs
from hlrm.fileio import finite_or_none
from hlrm.retrieval import AnnIndex
from hlrm.runs import Recommendation, Run

#: Metrics shown by ``GET /model`` (the rest of metrics.json stays in the run directory).
HEADLINE_METRICS = ("ndcg@10", "recall@10", "precision@10", "hit@10", "map@10", "mrr@10")


def recommendation_json(recommendation: Recommendation) -> dict[str, Any]:
    """A recommendation as the API returns it: original ids and titles, no internal index, and
    None for a score or weight JSON cannot hold. Built field by field: ``dataclasses.asdict``
    deep-copies, and it was 15 % of a served CML request (py-spy, 64 clients, 2026-12-01)."""
    r = recommendation
    return {
        "rank": r.rank,
        "item_id": r.item_id,
        "title": r.title,
        "score": r.score if math.isfinite(r.score) else None,
        "explanation": None if r.explanation is None else finite_or_none(r.explanation),
    }


class RecommendationService:
    """Recommendations, similar items, item search and model facts from one :class:`Run`.

    ``ann``: candidates from an approximate index re-ranked by the exact score
    (:mod:`hlrm.retrieval`); None ranks every item exactly.
    """

    def __init__(self, run: Run, ann: AnnIndex | None = None) -> None:
        self.run = run
        self.ann = ann
        split = run.split
        self.item_ids = np.asarray(split.item_ids).astype(str)
        self.titles = (
            None if split.item_titles is None else np.asarray(split.item_titles).astype(str)
        )
        self.popularity = split.item_popularity
        self._folded_ids = pd.Series(self.item_ids).str.casefold()
        self._folded_titles = None if self.titles is None else pd.Series(self.titles).str.casefold()

    # ---- recommendations ----------------------------------------------------------------------
    def check_user(self, user: str) -> None:
        """Raise :class:`~hlrm.errors.UnknownIdError` unless ``user`` is a known user id."""
        self.run.split.users.index(user)

    def check_items(self, items: Sequence[str]) -> None:
        self.run.split.items.indices(list(items))

    def recommend_users(
        self, users: Sequence[str], k: int, explain: bool
    ) -> list[list[dict[str, Any]]]:
        """Top-``k`` lists of known users, scored in one call (the micro-batcher's unit)."""
        lists = runs.recommend_many(self.run, list(users), k=k, explain=explain, ann=self.ann)
        return [[recommendation_json(r) for r in ranked] for ranked in lists]

    def recommend_new_user(self, items: Sequence[str], k: int, explain: bool) -> list[dict]:
        """Top-``k`` for a user given by the items they like (folded in, not stored)."""
        ranked = runs.recommend(self.run, items=list(items), k=k, explain=explain, ann=self.ann)
        return [recommendation_json(r) for r in ranked]

    def similar_items(self, item: str, k: int) -> list[dict[str, Any]]:
        return [recommendation_json(r) for r in runs.similar_items(self.run, [item], k=k)[0]]

    # ---- the catalogue --------------------------------------------------------------------------
    def search_items(self, query: str, limit: int) -> list[dict[str, Any]]:
        """Items whose id or title contains ``query`` (case-insensitive): an exact id first, then
        ids, then titles, each by training popularity; the most popular items for no query."""
        folded = query.strip().casefold()
        if not folded:
            order = np.argsort(-self.popularity, kind="stable")[:limit]
            return [self.item_json(int(i)) for i in order]
        exact = (self._folded_ids == folded).to_numpy()
        in_id = self._folded_ids.str.contains(folded, regex=False).to_numpy()
        in_title = (
            np.zeros_like(in_id)
            if self._folded_titles is None
            else self._folded_titles.str.contains(folded, regex=False).to_numpy()
        )
        matches = np.flatnonzero(in_id | in_title)
        # exact id, then id match, then title match; more popular first within each group
        rank_class = np.where(exact[matches], 0, np.where(in_id[matches], 1, 2))
        order = np.lexsort((matches, -self.popularity[matches], rank_class))[:limit]
        return [self.item_json(int(i)) for i in matches[order]]

    def item_json(self, index: int) -> dict[str, Any]:
        return {
            "item_id": str(self.item_ids[index]),
            "title": None if self.titles is None else str(self.titles[index]),
            "popularity": int(self.popularity[index]),
        }

    def example_users(self, count: int = 20) -> list[str]:
        """Known users to offer on the page: evenly spread over the id map."""
        n_users = self.run.split.n_users
        picks = np.unique(np.linspace(0, n_users - 1, num=min(count, n_users)).astype(int))
        return [str(self.run.split.user_ids[i]) for i in picks]

    def model_info(self) -> dict[str, Any]:
        run, model = self.run, self.run.model
        metrics = run.metrics or {}
        device = next(iter(model.state_dict().values())).device
        return finite_or_none(
            {
                "model": model.name,
                "dataset": run.split.name,
                "users": run.split.n_users,
                "items": run.split.n_items,
                "explains": hasattr(model, "explain"),
                "uses_history": model.uses_history,
                "metrics": {key: metrics[key] for key in HEADLINE_METRICS if key in metrics},
                "hlrm_version": hlrm.__version__,
                "device": str(device),
                "retrieval": "exact" if self.ann is None else self.ann.describe(),
                "example_users": self.example_users(),
            }
        )
