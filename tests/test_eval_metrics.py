"""Ranking metrics: the spec's test vectors (models-spec §5) and hand-computed standard values."""

import numpy as np
import pytest

from hlrm.evaluation.metrics import METRICS, ranking_metrics


def hit_rows(*ranks_per_user: tuple[int, ...], depth: int = 10) -> np.ndarray:
    """A (U, depth) hit matrix with hits at the given 1-based ranks."""
    hits = np.zeros((len(ranks_per_user), depth), dtype=bool)
    for u, ranks in enumerate(ranks_per_user):
        hits[u, [r - 1 for r in ranks]] = True
    return hits


# Spec table: hits at ranks (1, 3) with |T|=3; rank 5 with |T|=20; no hit with |T|=5; k = 10.
SPEC_HITS = hit_rows((1, 3), (5,), ())
SPEC_RELEVANT = np.array([3, 20, 5])
SPEC_TABLE = {
    "precision@10": [0.2, 0.1, 0.0],
    "recall@10": [0.666667, 0.05, 0.0],
    "paper_map@10": [0.166667, 0.02, 0.0],
    "paper_mrr@10": [1.333333, 0.2, 0.0],
    "global_ndcg@10": [0.703918, 0.085143, 0.0],
    "local_ndcg@10": [0.919721, 0.386853, np.nan],
}


@pytest.mark.parametrize("key", sorted(SPEC_TABLE))
def test_spec_test_vectors(key):
    values = ranking_metrics(SPEC_HITS, SPEC_RELEVANT, [10])
    np.testing.assert_allclose(values[key], SPEC_TABLE[key], atol=1e-6)


def test_standard_metrics_on_spec_rows():
    values = ranking_metrics(SPEC_HITS, SPEC_RELEVANT, [10])
    expected = {
        "hit@10": [1, 1, 0],
        "map@10": [(1 + 2 / 3) / 3, (1 / 5) / 10, 0],  # AP / min(|T|, k)
        "mrr@10": [1, 0.2, 0],  # first hit only
        "ndcg@10": [0.703918, 0.085143, 0.0],
        "paper_hitrate@10": [2 / 3, 0.05, 0],  # the recall formula
    }
    for key, want in expected.items():
        np.testing.assert_allclose(values[key], want, atol=1e-6, err_msg=key)


def test_standard_and_paper_variants_differ_where_they_should():
    # |T| = 2, hits at ranks 2 and 3, k = 5.
    values = ranking_metrics(hit_rows((2, 3), depth=5), np.array([2]), [5])
    expected = {
        "precision@5": 0.4,
        "recall@5": 1.0,
        "hit@5": 1.0,
        "map@5": (1 / 2 + 2 / 3) / 2,
        "paper_map@5": (1 / 2 + 2 / 3) / 5,
        "mrr@5": 0.5,
        "paper_mrr@5": 1 / 2 + 1 / 3,
        "ndcg@5": 0.693426,  # (1/log2 3 + 1/log2 4) / (1 + 1/log2 3)
        "local_ndcg@5": 0.693426,  # two hits: the local ideal equals the global one here
    }
    for key, want in expected.items():
        assert values[key][0] == pytest.approx(want, abs=1e-6), key


def test_every_k_reads_a_prefix():
    values = ranking_metrics(SPEC_HITS, SPEC_RELEVANT, [1, 5, 10])
    assert set(values) == {f"{m}@{k}" for m in METRICS for k in (1, 5, 10)}
    np.testing.assert_allclose(values["precision@1"], [1, 0, 0])
    np.testing.assert_allclose(values["precision@5"], [0.4, 0.2, 0])
    np.testing.assert_allclose(values["recall@5"], [2 / 3, 0.05, 0])
    np.testing.assert_allclose(values["map@5"], [(1 + 2 / 3) / 3, 0.2 / 5, 0])
    np.testing.assert_allclose(values["ndcg@5"], [0.703918, 0.131205, 0], atol=1e-6)
    np.testing.assert_allclose(values["mrr@1"], [1, 0, 0])
    np.testing.assert_allclose(values["local_ndcg@1"], [1, np.nan, np.nan])


def test_invalid_inputs():
    with pytest.raises(ValueError, match="every k"):
        ranking_metrics(SPEC_HITS, SPEC_RELEVANT, [0])
    with pytest.raises(ValueError, match="relevant"):
        ranking_metrics(SPEC_HITS, np.array([3, 0, 5]), [10])


def test_a_cut_off_beyond_the_list_counts_the_missing_ranks_as_misses():
    """A list cannot be longer than the catalogue: ranks beyond it are misses, computed without
    materialising them (``hlrm evaluate --k 1000000``)."""
    padded = np.hstack([SPEC_HITS, np.zeros((3, 10), dtype=bool)])
    short = ranking_metrics(SPEC_HITS, SPEC_RELEVANT, [15, 100])
    full = ranking_metrics(padded, SPEC_RELEVANT, [15])
    for key, values in full.items():
        np.testing.assert_allclose(short[key], values, err_msg=key)
    assert short["precision@100"][0] == pytest.approx(2 / 100)
