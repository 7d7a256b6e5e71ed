"""Paired significance tests of models against a baseline, on per-user metrics.

A comparison table is only as trustworthy as the differences it claims. Two models evaluated on
the same test users give, for every metric, one value per user each; the test is on those pairs
(users found in both runs, aligned by original user id), so user-to-user variance cancels out:

* the **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, zero differences dropped): no
  normality assumption, the right default for bounded, zero-heavy metrics such as NDCG;
* the **paired t-test** (``scipy.stats.ttest_rel``): what many papers report, kept for comparison.

A table tests many (model, metric) pairs at once, so p-values are corrected with **Holm's
step-down method** across all of them (separately for each test), which controls the family-wise
error rate without assuming the tests are independent.

Per-user values that are undefined (``local_ndcg`` of a user without a hit) drop out of that
metric's pairs only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hlrm.errors import ConfigError

#: Columns of a per-user metrics frame that identify users rather than measure them.
ID_COLUMNS = ("user", "user_id", "n_relevant", "cohort")


@dataclass
class PairedTest:
    """One model against the baseline on one per-user metric."""

    model: str
    baseline: str
    metric: str
    #: Users with a defined value in both runs.
    n: int
    mean: float
    baseline_mean: float
    #: mean − baseline_mean over the paired users.
    delta: float
    p_wilcoxon: float
    p_ttest: float
    #: Holm-adjusted p-values (across every test of the same kind in the family).
    p_wilcoxon_holm: float = math.nan
    p_ttest_holm: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order; NaN (no test) stays NaN and does
    not count towards the number of tests."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = len(defined)
    if m == 0:
        return adjusted
    order = defined[np.argsort(p[defined], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def paired_pvalues(values: np.ndarray, baseline: np.ndarray) -> tuple[float, float]:
    """Two-sided (Wilcoxon, paired t-test) p-values for aligned vectors without NaN.

    Degenerate cases get their limit instead of scipy's warnings: no pairs → NaN; identical
    vectors → 1; a constant non-zero difference → 0 for the t-test.
    """
    diff = np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if len(diff) < 2:
        return math.nan, math.nan
    if not diff.any():
        return 1.0, 1.0
    p_wilcoxon = float(stats.wilcoxon(diff).pvalue)
    if np.ptp(diff) <= 1e-12 * np.abs(diff).max():  # constant up to rounding: t is infinite
        return p_wilcoxon, 0.0
    return p_wilcoxon, float(stats.ttest_rel(values, baseline).pvalue)


def per_user_metrics(frame: pd.DataFrame) -> list[str]:
    """The metric columns of a per-user frame (everything but the id columns)."""
    return [c for c in frame.columns if c not in ID_COLUMNS]


def compare_to_baseline(
    per_user: Mapping[str, pd.DataFrame],
    baseline: str,
    metrics: Sequence[str] | None = None,
) -> list[PairedTest]:
    """Test every model of ``per_user`` (label → per-user frame with a ``user_id`` column) but
    ``baseline`` against it on every metric of ``metrics`` (default: all per-user metrics of the
    baseline), with Holm correction across all of these tests."""
    if baseline not in per_user:
        raise ConfigError(f"baseline {baseline!r} is not among {', '.join(per_user)}")
    base = _by_user(per_user[baseline], baseline)
    metrics = list(metrics) if metrics is not None else per_user_metrics(per_user[baseline])
    tests: list[PairedTest] = []
    for label, frame in per_user.items():
        if label == baseline:
            continue
        joined = _by_user(frame, label).merge(
            base, left_index=True, right_index=True, suffixes=("", "\0base")
        )
        for metric in metrics:
            if metric not in joined or f"{metric}\0base" not in joined:
                raise ConfigError(f"metric {metric!r} is missing from the per-user values")
            pairs = joined[[metric, f"{metric}\0base"]].dropna().to_numpy(dtype=np.float64)
            a, b = pairs[:, 0], pairs[:, 1]
            p_wilcoxon, p_ttest = paired_pvalues(a, b)
            mean = float(a.mean()) if len(a) else math.nan
            base_mean = float(b.mean()) if len(b) else math.nan
            tests.append(
                PairedTest(
                    model=label,
                    baseline=baseline,
                    metric=metric,
                    n=len(a),
                    mean=mean,
                    baseline_mean=base_mean,
                    delta=mean - base_mean,
                    p_wilcoxon=p_wilcoxon,
                    p_ttest=p_ttest,
                )
            )
    for test, p in zip(tests, holm([t.p_wilcoxon for t in tests]), strict=True):
        test.p_wilcoxon_holm = float(p)
    for test, p in zip(tests, holm([t.p_ttest for t in tests]), strict=True):
        test.p_ttest_holm = float(p)
    return tests


def _by_user(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Metric columns indexed by original user id; duplicates (a user evaluated in several runs
    of one model, e.g. several seeds) are averaged."""
    if "user_id" not in frame:
        raise ConfigError(f"the per-user metrics of {label!r} have no user_id column")
    values = frame[["user_id", *per_user_metrics(frame)]]
    keyed = values.assign(user_id=values["user_id"].astype(str))
    return keyed.groupby("user_id", sort=True).mean()
