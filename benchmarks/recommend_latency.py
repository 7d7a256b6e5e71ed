"""In-process latency of ``runs.recommend_many`` (the call one micro-batch of ``hlrm serve``
makes): the median over ``--repeats`` random batches of 1, 8 and 64 known users, top 10, exact.

``--item-item BETA`` (CML and HLR runs) also times the run's item-item variant (CML-EASE /
HLR-EASE, :mod:`hlrm.models.hybrid`) with β fixed, on its pruned path and with pruning turned
off, on the same users, and checks that both give identical lists. ``--prune-group N`` sets the
relation models' ``prune_group``. docs/serving.md quotes it:

    python benchmarks/recommend_latency.py RUN_DIR [--item-item 1.0] [--prune-group 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from hlrm import runs
from hlrm.models import create_model
from hlrm.models.hybrid import ITEM_ITEM_VARIANTS, item_item_variant
from hlrm.runs import Run


def with_item_item(run: Run, beta: float) -> Run:
    """``run`` with its model loaded into the item-item variant, β fixed."""
    model = item_item_variant(run.model, run.split.train, blend=beta)
    return dataclasses.replace(run, model=model)


def unpruned(run: Run) -> Run:
    """``run`` whose model never takes the pruned path (its bounds are withheld)."""
    model = run.model
    copy = create_model(model.name, model.n_users, model.n_items, **model.hparams)
    copy.load_state_dict(model.state_dict())
    copy.prepare(run.split.train)
    copy.coefficient_bounds = lambda users, history: None
    return dataclasses.replace(run, model=copy.eval())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--users", default="1,8,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--item-item", type=float, help="also time the variant with this beta")
    parser.add_argument("--prune-group", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = Run.open(args.run_dir)
    rivals = {run.model.name: run}
    if args.item_item is not None:
        variant = with_item_item(run, args.item_item)
        rivals[variant.model.name] = variant
        rivals[f"{variant.model.name} unpruned"] = unpruned(variant)
    if args.prune_group is not None:
        for rival in rivals.values():
            rival.model.prune_group = args.prune_group
    ids = [str(user) for user in run.split.user_ids]
    rng = np.random.default_rng(args.seed)
    for rival in rivals.values():  # warm-up (scoring tiles, allocator)
        runs.recommend_many(rival, ids[:8], k=10)
    for size in (int(part) for part in args.users.split(",")):
        seconds: dict[str, list[float]] = {name: [] for name in rivals}
        for _ in range(args.repeats):
            users = list(rng.choice(ids, size, replace=False))
            lists = {}
            for name, rival in rivals.items():  # interleaved: the same load for each
                started = time.perf_counter()
                ranked = runs.recommend_many(rival, users, k=10)
                seconds[name].append(time.perf_counter() - started)
                lists[name] = [[r.item for r in items] for items in ranked]
            if args.item_item is not None:
                name = ITEM_ITEM_VARIANTS[run.model.name]
                assert lists[name] == lists[f"{name} unpruned"], "pruned lists differ"
        medians = {name: f"{1000 * float(np.median(v)):.1f} ms" for name, v in seconds.items()}
        print(f"{size} users: {medians}", flush=True)


if __name__ == "__main__":
    main()
