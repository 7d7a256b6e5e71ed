"""Probe: does a different item-item representation add to a trained CML? No training of the
CML: its scores and those of EASE (fitted on the same training split) are standardised per user
and blended,

    s(u, ·) = z(-d_CML(u, ·)) + β · z(x_u B),

with β chosen on validation and the choice reported on test, with the paired tests of
``hlrm compare`` (Wilcoxon and t, per-user NDCG@10) against the CML alone. If even this blend
is not significantly above CML, a jointly trained item-item variant of the CML family has
little to find. docs/results.md quotes it:

    python benchmarks/probe_blend.py RUN_DIR [--l2 100]
"""

from __future__ import annotations

import argparse

import torch

from hlrm.evaluation.protocol import evaluate
from hlrm.evaluation.significance import paired_pvalues
from hlrm.models.base import History, Recommender, create_model
from hlrm.runs import Run

RAW = False


def standardised(scores: torch.Tensor) -> torch.Tensor:
    centred = scores - scores.mean(1, keepdim=True)
    return centred / centred.std(1, keepdim=True).clamp_min(1e-12)


BETAS = {False: (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 1e6), True: (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)}


class Blend(Recommender):
    """``z(base) + β · z(other)`` per user (see the module docstring)."""

    name = "cml+ease"
    trainable = False

    def __init__(self, base: Recommender, other: Recommender, beta: float) -> None:
        super().__init__(base.n_users, base.n_items)
        self.base, self.other, self.beta = base, other, beta

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        if RAW:
            return self.base.score(users) + self.beta * self.other.score(users)
        blended = standardised(self.base.score(users))
        if self.beta:
            blended += self.beta * standardised(self.other.score(users))
        return blended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--l2", type=float, default=100.0, help="EASE's L2 (validation best)")
    parser.add_argument("--raw", action="store_true", help="blend raw scores, no z-scores")
    args = parser.parse_args()
    global RAW
    RAW = args.raw
    run = Run.open(args.run_dir)
    split, base = run.split, run.model
    ease = create_model("ease", split.n_users, split.n_items, l2=args.l2)
    ease.prepare(split.train)
    ease.eval()

    def result(beta: float, target: str):
        return evaluate(Blend(base, ease, beta), split, ks=(10,), target=target)

    with torch.no_grad():
        best = (-1.0, 0.0)
        for beta in BETAS[RAW]:
            value = result(beta, "valid").metrics["ndcg@10"]
            label = "EASE alone" if beta == 1e6 else f"beta={beta}"
            print(f"{label}: valid NDCG@10 {value:.4f}", flush=True)
            if beta < 1e6:
                best = max(best, (value, beta))
        beta = best[1]
        cml, blend = result(0.0, "test"), result(beta, "test")
        values, baseline = (r.per_user["ndcg@10"].to_numpy() for r in (blend, cml))
        wilcoxon, t_test = paired_pvalues(values, baseline)
        print(
            f"best on validation beta={beta}: test NDCG@10 {blend.metrics['ndcg@10']:.4f} "
            f"against CML {cml.metrics['ndcg@10']:.4f} ({len(values)} users; "
            f"Wilcoxon p={wilcoxon:.3g}, t-test p={t_test:.3g})"
        )


if __name__ == "__main__":
    main()
