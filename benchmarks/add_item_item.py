"""The item-item variant of a trained run without training it again: a finished CML, HLR or HLR++
run becomes the CML-EASE, HLR-EASE or HLR++-EASE run the same configuration would give, because
the variant's metric part trains bit for bit like the base model (``tests/test_hybrid.py``) and
β is chosen after training. The base run's weights are loaded into the variant, EASE is fitted
on the same training split, β is chosen on validation by
:func:`hlrm.models.hybrid.choose_blend` exactly as the trainer does (best NDCG@10, the smallest
β on ties, the grid extended while its edge wins), and the test split is evaluated on every test
user. With ``--out`` the per-user metrics are written there for ``benchmarks/paired_test.py``.
docs/results.md quotes it:

    python benchmarks/add_item_item.py RUN_DIR [--l2 250] [--out DIR]

Each β costs one validation ranking, by the variant's own exact (for the relation variants:
pruned) path.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hlrm.errors import ConfigError
from hlrm.evaluation.protocol import evaluate
from hlrm.models.hybrid import choose_blend, item_item_variant
from hlrm.runs import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--l2", type=float, default=250.0, help="EASE's L2 (the variants' default)")
    parser.add_argument("--out", type=Path, help="write per_user_metrics.parquet here")
    args = parser.parse_args()
    run = Run.open(args.run_dir)
    split = run.split
    try:
        model = item_item_variant(run.model, split.train, l2=args.l2)
    except ConfigError as error:
        raise SystemExit(str(error)) from None
    started = time.perf_counter()

    def value_of(beta: float) -> float:
        model.set_blend(beta)
        value = evaluate(model, split, ks=(10,), target="valid").metrics["ndcg@10"]
        print(f"beta = {beta}: validation NDCG@10 {value:.5f}", flush=True)
        return value

    with torch.no_grad():
        chosen, _ = choose_blend(model.blend_grid, value_of)
        model.set_blend(chosen)
        result = evaluate(model, split, ks=(5, 10, 20), target="test")
    print(
        f"{model.name} from {args.run_dir}: beta = {chosen} (validation), test NDCG@10 "
        f"{result.metrics['ndcg@10']:.4f}, Recall@10 {result.metrics['recall@10']:.4f} on "
        f"{len(result.per_user)} users (base run: {run.metrics['ndcg@10']:.4f}); "
        f"{time.perf_counter() - started:.0f} s"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result.per_user.to_parquet(args.out / "per_user_metrics.parquet")


if __name__ == "__main__":
    main()
