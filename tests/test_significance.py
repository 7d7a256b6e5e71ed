"""Paired tests against a baseline: Holm by hand, scipy agreement, alignment by user id."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hlrm.errors import ConfigError
from hlrm.evaluation.significance import compare_to_baseline, holm, paired_pvalues


def test_holm_matches_hand_computation():
    # sorted: 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_ignores_missing_tests():
    adjusted = holm([0.5, math.nan, 0.6])
    assert math.isnan(adjusted[1])
    # two tests, not three: 0.5 * 2 = 1.0, then max(1.0, 0.6) capped at 1
    np.testing.assert_allclose(adjusted[[0, 2]], [1.0, 1.0])
    assert holm([]).shape == (0,)


def test_paired_pvalues_agree_with_scipy_and_handle_degenerate_cases():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + rng.normal(0.02, 0.05, 200)
    p_w, p_t = paired_pvalues(b, a)
    assert p_w == pytest.approx(stats.wilcoxon(b - a).pvalue)
    assert p_t == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert paired_pvalues(a, a) == (1.0, 1.0)
    assert paired_pvalues(a + 0.1, a)[1] == 0.0  # a constant shift: certain for the t-test
    assert all(math.isnan(p) for p in paired_pvalues(a[:1], b[:1]))


def frame(user_ids, **metrics):
    return pd.DataFrame({"user": range(len(user_ids)), "user_id": user_ids, **metrics})


def test_compare_aligns_users_by_id_and_corrects_across_models_and_metrics():
    rng = np.random.default_rng(1)
    n = 300
    ids = np.arange(n) + 1000
    base_ndcg = rng.random(n)
    local = rng.random(n)
    local[:10] = np.nan  # users without a hit: undefined, dropped from that metric only
    baseline = frame(ids, **{"ndcg@10": base_ndcg, "local_ndcg@10": local})
    # "better": +0.1 for every user, rows shuffled and one extra user the baseline lacks
    order = rng.permutation(n)
    better = frame(
        np.append(ids[order], 99),
        **{
            "ndcg@10": np.append(base_ndcg[order] + 0.1 + rng.normal(0, 0.01, n), 0.0),
            "local_ndcg@10": np.append(local[order], 0.5),
        },
    )
    same = frame(ids, **{"ndcg@10": base_ndcg, "local_ndcg@10": local})
    tests = compare_to_baseline({"base": baseline, "better": better, "same": same}, "base")
    assert len(tests) == 4
    by_key = {(t.model, t.metric): t for t in tests}
    up = by_key["better", "ndcg@10"]
    assert up.n == n
    assert up.delta == pytest.approx(0.1, abs=0.005)
    assert up.p_wilcoxon_holm < 0.05 and up.p_ttest_holm < 0.05
    assert up.p_wilcoxon_holm >= up.p_wilcoxon
    assert by_key["better", "local_ndcg@10"].n == n - 10
    assert by_key["same", "ndcg@10"].p_wilcoxon_holm == 1.0
    raw = [t.p_wilcoxon for t in tests]
    np.testing.assert_allclose([t.p_wilcoxon_holm for t in tests], holm(raw))


def test_compare_errors_are_clear():
    baseline = frame([1, 2], **{"ndcg@10": [0.1, 0.2]})
    with pytest.raises(ConfigError, match="baseline 'cml'"):
        compare_to_baseline({"bpr": baseline}, "cml")
    with pytest.raises(ConfigError, match="recall@10"):
        compare_to_baseline({"a": baseline, "b": baseline}, "a", ["recall@10"])
