"""The item-item variant of a trained run without training it again: a finished CML or HLR run
becomes the CML-EASE or HLR-EASE run the same configuration would give, because the variant's
metric part trains bit for bit like the base model (``tests/test_hybrid.py``) and β is chosen
after training. The base run's weights are loaded into the variant, EASE is fitted on the same
training split, β is chosen on validation over :data:`hlrm.models.hybrid.BLEND_GRID` exactly as
the trainer does (best NDCG@10, the smallest β on ties), and the test split is evaluated on every
test user. With ``--out`` the per-user metrics are written there for
``benchmarks/paired_test.py``. docs/results.md quotes it:

    python benchmarks/add_item_item.py RUN_DIR [--l2 250] [--out DIR]

Each β costs one validation ranking; the base model's scores are computed once per split and
reused (the item-item term is added to them), so an HLR run costs two full rankings.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch

from hlrm.evaluation.protocol import evaluate
from hlrm.models import create_model
from hlrm.models.base import History
from hlrm.models.hybrid import BLEND_GRID, ItemItemTerm
from hlrm.runs import Run

VARIANTS = {"cml": "cml-ease", "hlr": "hlr-ease"}


class CachedBase:
    """Wraps the variant's ``score`` so the base part of each (users, pools) block is computed
    once and the item-item term added for every β (the variant's own arithmetic otherwise)."""

    def __init__(self, model) -> None:
        self.model = model
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, users, history: History | None = None, items=None) -> torch.Tensor:
        pools = b"" if history is None else history.items.numpy().tobytes()
        subset = b"all" if items is None else items.numpy().tobytes()
        key = hashlib.sha1(users.numpy().tobytes() + pools + subset).hexdigest()
        if key not in self.cache:  # the base model's (CML's / HLR's) own score
            self.cache[key] = super(ItemItemTerm, self.model).score(users, history, items)
        scores = self.cache[key]
        if self.model.blend == 0.0:
            return scores
        extra = self.model._item_item(users)
        return scores + (extra if items is None else extra[:, items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--l2", type=float, default=250.0, help="EASE's L2 (the variants' default)")
    parser.add_argument("--out", type=Path, help="write per_user_metrics.parquet here")
    args = parser.parse_args()
    run = Run.open(args.run_dir)
    base, split = run.model, run.split
    if base.name not in VARIANTS:
        raise SystemExit(f"{base.name} has no item-item variant here (only {', '.join(VARIANTS)})")
    model = create_model(
        VARIANTS[base.name], split.n_users, split.n_items, **base.hparams, l2=args.l2
    )
    missing = model.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert all(key == "blend_weight" or key.startswith("item_item.") for key in missing), missing
    model.prepare(split.train)
    model.eval()
    model.score = CachedBase(model)  # instance attribute: the evaluator calls model.score
    started = time.perf_counter()
    values = {}
    with torch.no_grad():
        for beta in BLEND_GRID:
            model.set_blend(beta)
            values[beta] = evaluate(model, split, ks=(10,), target="valid").metrics["ndcg@10"]
            print(f"beta = {beta}: validation NDCG@10 {values[beta]:.4f}", flush=True)
        chosen = max(BLEND_GRID, key=lambda beta: (values[beta], -beta))
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
