"""Paired significance test between two finished runs on the same split: the per-user values of
a metric (``per_user_metrics.parquet``, users in both runs), the relative difference of the means
and the two-sided Wilcoxon signed-rank and paired t-test p-values of ``hlrm compare`` (before any
multiple-testing correction). docs/results.md quotes it:

    python benchmarks/paired_test.py RUN_A RUN_B [--metric ndcg@10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from hlrm.evaluation.significance import paired_pvalues


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--metric", default="ndcg@10")
    args = parser.parse_args()
    a, b = (
        pd.read_parquet(path / "per_user_metrics.parquet").set_index("user_id")
        for path in (args.run_a, args.run_b)
    )
    users = a.index.intersection(b.index)
    left, right = a.loc[users, args.metric], b.loc[users, args.metric]
    wilcoxon, t_test = paired_pvalues(left.to_numpy(), right.to_numpy())
    change = (left.mean() / right.mean() - 1) * 100
    print(
        f"{args.metric}: {left.mean():.4f} vs {right.mean():.4f} ({change:+.1f} %), "
        f"{len(users)} users, Wilcoxon p = {wilcoxon:.2g}, t-test p = {t_test:.2g}"
    )


if __name__ == "__main__":
    main()
