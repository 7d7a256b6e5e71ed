"""Two-stage retrieval for large catalogues: approximate candidates, exact re-ranking.

CML, LRML, HLR, HLR++, TransCF and AdaCML all score with a distance ``||u + r - t||²`` between a
user u and an item t, where the translation r is zero for CML, a convex combination of memory
slots for the relation models, of the user's pool for AdaCML and a product of neighbourhood means
for TransCF: bounded, and small next to the user-item offset in trained models. The first
stage finds the items nearest to the user by the CML part ``||u - t||²`` in an HNSW graph (faiss)
over the item embeddings; the second scores only those candidates with the model's exact score
(``model.score_candidates``, the spec's formula per (user, candidate) pair, batched over
users) and ranks them. The list equals the exact full ranking whenever the exact top k lie
among the candidates (scores agree with the full scorer to float rounding);
``benchmarks/ann.py`` measures how often (recall@10 against exact lists) and how much faster
it is. Exact ranking stays the default everywhere;
``--ann`` asks for this one.

The user's known items are removed from the candidates before re-ranking, so the graph is
searched ``candidates`` deeper than the user's known items: a user's own items are usually
among their nearest.

CML's optional item bias enters the first stage exactly: with ``B = max_i b_i`` the item vector
``[e_i, sqrt(B - b_i)]`` and the query ``[u, 0]`` have squared distance ``||u - e_i||² - b_i + B``,
the biased distance plus a constant.

Needs ``faiss-cpu`` (``pip install "hlrm[ann]"``).
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from hlrm.errors import ConfigError
from hlrm.models.base import Recommender
from hlrm.training.history import HistorySampler

#: Items re-ranked exactly per user (chosen from benchmarks/ann.py, docs/serving.md).
DEFAULT_CANDIDATES = 100
#: HNSW graph degree and build-time search width (faiss's M and efConstruction).
GRAPH_DEGREE = 32
BUILD_WIDTH = 200


def supports_ann(model: Recommender) -> bool:
    """Whether ``model`` ranks by distance to item embeddings in a metric space and scores a
    user's own candidates without scoring every item (CML, CML-EASE, LRML, HLR, HLR++, HLR-EASE,
    TransCF, AdaCML)."""
    tables = all(
        isinstance(getattr(model, name, None), Tensor)
        for name in ("user_embeddings", "item_embeddings")
    )
    return tables and type(model).score_candidates is not Recommender.score_candidates


def require_faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            'approximate retrieval (--ann) needs faiss: pip install "hlrm[ann]"'
        ) from None
    return faiss


class AnnIndex:
    """An HNSW index over a model's item embeddings that yields re-ranked top-k lists.

    ``candidates``: unknown items per user scored exactly (more: closer to exact, slower).
    ``search_width``: the graph search's beam (faiss's efSearch), at least the search depth.
    """

    def __init__(
        self,
        index,
        *,
        n_items: int,
        candidates: int,
        search_width: int,
        offset: float | None,
        build_seconds: float,
    ) -> None:
        self.index = index
        self.n_items = n_items
        self.candidates = candidates
        self.search_width = search_width
        self.offset = offset  # None: no item-bias coordinate
        self.build_seconds = build_seconds

    @classmethod
    def build(
        cls,
        model: Recommender,
        *,
        candidates: int = DEFAULT_CANDIDATES,
        graph_degree: int = GRAPH_DEGREE,
        build_width: int = BUILD_WIDTH,
        search_width: int | None = None,
    ) -> AnnIndex:
        if not supports_ann(model):
            raise ConfigError(
                "--ann needs a model that ranks by distance to item embeddings and can score a "
                "subset of items (cml, cml-ease, lrml, hlr, hlr++, hlr-ease, hlr++-ease, transcf, "
                "adacml), not "
                f"{model.name}"
            )
        if candidates < 1 or graph_degree < 2 or build_width < 1:
            raise ConfigError("ANN candidates, graph degree and build width must be positive")
        faiss = require_faiss()
        started = time.perf_counter()
        items = model.item_embeddings.detach().to("cpu", torch.float32).numpy()
        biases = getattr(model, "item_biases", None)
        offset = None
        if isinstance(biases, Tensor):
            bias = biases.detach().to("cpu", torch.float32).numpy()
            offset = float(bias.max())
            items = np.hstack([items, np.sqrt(np.maximum(offset - bias, 0.0))[:, None]])
        items = np.ascontiguousarray(items, dtype=np.float32)
        index = faiss.IndexHNSWFlat(items.shape[1], graph_degree)
        index.hnsw.efConstruction = build_width
        index.add(items)
        return cls(
            index,
            n_items=len(items),
            candidates=candidates,
            search_width=search_width or 2 * candidates,
            offset=offset,
            build_seconds=time.perf_counter() - started,
        )

    def describe(self) -> str:
        return (
            f"approximate: HNSW (faiss) candidates by the CML distance, {self.candidates} per "
            f"user re-ranked by the exact score"
        )

    def search(self, queries: np.ndarray, depth: int) -> np.ndarray:
        """The ``depth`` nearest items (U, depth) of each query row, nearest first; -1 pads."""
        faiss = require_faiss()
        depth = max(1, min(depth, self.n_items))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.offset is not None:
            queries = np.hstack([queries, np.zeros((len(queries), 1), dtype=np.float32)])
        params = faiss.SearchParametersHNSW(efSearch=max(self.search_width, depth))
        return self.index.search(queries, depth, params=params)[1]

    def candidate_items(self, queries: np.ndarray, known: sp.csr_matrix) -> list[np.ndarray]:
        """Per query row, up to ``candidates`` nearest items not in its row of ``known``. Each
        row searches ``candidates`` plus its own known items deep, so a user with few known
        items does not pay for the one with most."""
        out = []
        for row, query in enumerate(queries):
            own = known.indices[known.indptr[row] : known.indptr[row + 1]]
            neighbours = self.search(query[None], self.candidates + len(own))[0]
            neighbours = neighbours[neighbours >= 0]
            keep = neighbours[~np.isin(neighbours, own)] if len(own) else neighbours
            out.append(keep[: self.candidates])
        return out

    def top_k_scored(
        self,
        model: Recommender,
        users: np.ndarray,
        exclude: sp.csr_matrix,
        k: int,
        *,
        history_sampler: HistorySampler | None = None,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best items (int64 (len(users), k), best first) of each user among its
        candidates, and their exact scores (float32); -1 and -inf pad short lists, ties go to
        the lower item index. ``exclude`` (n_users, n_items) rows list what is never
        recommended; history-based models draw their pools from ``history_sampler`` (with
        ``generator``). Mirrors :func:`hlrm.evaluation.ranking.top_k_scored`, whose lists these
        equal when every exact top-k item is a candidate (up to float rounding of near-ties).
        ``model`` may be a fold-in copy of the indexed one."""
        if model.n_items != self.n_items:
            raise ConfigError(f"the index holds {self.n_items} items, the model {model.n_items}")
        if model.uses_history and history_sampler is None:
            raise ValueError(f"{model.name} reads user histories: pass a history_sampler")
        users = np.asarray(users, dtype=np.int64)
        users_t = torch.from_numpy(users).to(device)
        with torch.inference_mode():
            queries = model.user_embeddings[users_t].to("cpu", torch.float32).numpy()
            found = self.candidate_items(queries, exclude[users])
            # one (U, C) matrix, each row sorted by item index; short rows repeat an item and
            # are masked, so ties resolve to the lower index after a stable sort by score
            width = max(1, max((len(row) for row in found), default=0))
            matrix = np.zeros((len(users), width), dtype=np.int64)
            valid = np.zeros((len(users), width), dtype=bool)
            for row, candidates in enumerate(found):
                candidates = np.sort(candidates)
                matrix[row, : len(candidates)] = candidates
                matrix[row, len(candidates) :] = candidates[0] if len(candidates) else 0
                valid[row, : len(candidates)] = True
            items = torch.from_numpy(matrix).to(device)
            history = None
            if history_sampler is not None:
                history = history_sampler.sample(users_t, generator=generator)
            scores = model.score_candidates(users_t, history, items).to(torch.float32)
            scores[~torch.from_numpy(valid).to(device)] = -math.inf
            depth = min(k, width)
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :depth]
            values, chosen = scores.gather(1, order), items.gather(1, order)
            chosen[torch.isneginf(values)] = -1
        items_out = np.full((len(users), k), -1, dtype=np.int64)
        scores_out = np.full((len(users), k), -np.inf, dtype=np.float32)
        items_out[:, :depth] = chosen.cpu().numpy()
        scores_out[:, :depth] = values.cpu().numpy()
        return items_out, scores_out
