"""Scoring benchmark: top-k lists of the same users and items with three scorers, in one run.

* ``broadcast``: the official broadcast form (each model module's ``broadcast_scores``; for CML
  the (U, I, d) differences), in the official user chunks (5 users for HLR / HLR++, 100 for CML
  and LRML; fewer where the largest tensor would exceed 1 GiB). The reference.
* ``factorised``: the exact factorised ``model.score`` over every item (spec 9).
* ``default``: what ``top_k`` does by default: the exact pruned path for HLR and HLR++
  (β = 1), plain ``score`` for CML and LRML.

Each scorer produces top-k lists through ``hlrm.evaluation.ranking.top_k`` (masking of train ∪
valid and ``topk`` included) from the same history pools. Reported per model: users per second
(best of the repeats), peak extra memory (``--memory``, one child process per scorer, see
``common.py``), speedups over broadcast, the largest score difference to broadcast, whether the
lists of all scorers are identical (``differing_lists``: users whose list differs from the first
scorer's), and how much pruning skips: ``scored`` = share of the allowed (user, item) pairs the
pruned path scores exactly (measured without ``prune_limit``: above 0.5 the default path gives
up and scores every item), ``tri_scored`` = the share the triangle bound of the issue
(``||u + R - e_i|| >= ||u - e_i|| - mass·max_m ||M_m||``) would keep even with the exact k-th
distance as threshold.

Block table (HLR and HLR++): users per second of ``model.score`` called directly on the same
users in user blocks of 5, 20 and 100 (``ups_block5`` ...; best of at least 3 rounds, the
blocks interleaved within each round), ``block_spread`` = fastest ÷ slowest,
``block_cpu_spread``: the same for the process's CPU seconds (other jobs on the machine move it
less than the wall time), ``same_across_blocks``: whether the scores are bit-identical across
the blocks, and ``tiles``: the scorer's (users, items) tile (measured per machine,
:mod:`hlrm.models.tiling`; ``--no-autotune`` uses the fixed default).

``--quick``: ml-100k, 100 users, random parameters, 2 repeats, no memory children; under a
minute on 2 CPU cores. Prints one JSON line per model, then an aligned table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import common
from hlrm.models import Recommender
from hlrm.models.base import pool_rows
from hlrm.models.cml import squared_distances
from hlrm.models.memory import MemoryTranslationModel
from hlrm.runs import Run
from hlrm.training.history import HistorySampler

COLUMNS = [
    "model",
    "params",
    "users",
    "broadcast_ups",
    "plain_ups",
    "factorised_ups",
    "default_ups",
    "speedup_factorised",
    "speedup",
    "broadcast_mib",
    "factorised_mib",
    "default_mib",
    "memory_ratio",
    "max_abs_diff",
    "same_top_k",
    "scored",
    "tri_scored",
    "tiles",
    "ups_block5",
    "ups_block20",
    "ups_block100",
    "block_spread",
    "block_cpu_spread",
    "same_across_blocks",
]

#: User blocks of the block table.
BLOCKS = (5, 20, 100)


#: (slower, faster, key): speedups reported when both scorers ran.
RATIOS = [
    ("broadcast", "factorised", "speedup_factorised"),
    ("broadcast", "default", "speedup"),
    ("factorised", "default", "speedup_default_over_factorised"),
    ("plain", "factorised", "speedup_factorised_over_plain"),
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--models", default="cml,lrml,hlr,hlr++")
    parser.add_argument("--users", type=int, default=500, help="users sampled (with test items)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--history-size", type=int, default=50, help="P of HLR and HLR++")
    parser.add_argument(
        "--train-epochs", type=int, default=0, help="0: random (official init) parameters"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="keep / reuse the trained weights here"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        action="append",
        default=[],
        help="score a trained run's model on its split instead (repeatable; replaces --models)",
    )
    parser.add_argument(
        "--block-users", type=int, default=None, help="users per top_k block (default: library)"
    )
    parser.add_argument(
        "--scorers",
        default=",".join(common.SCORERS),
        help="the first is the reference of differing_lists",
    )
    parser.add_argument(
        "--score-memory",
        type=float,
        default=None,
        help="top_k's scoring memory budget in MiB (default: the library's)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per scorer (best kept)")
    parser.add_argument("--memory", action="store_true", help="peak memory per scorer (children)")
    common.add_run_options(parser)
    parser.add_argument(
        "--backend",
        choices=["auto", "plain", "triton"],
        default="auto",
        help="HLR / HLR++ scoring backend (auto: the Triton kernel on CUDA when installed)",
    )
    parser.add_argument(
        "--triton-precision",
        choices=["ieee", "tf32", "bf16"],
        default="ieee",
        help="products of the Triton kernel (tf32 / bf16: tensor cores; compare its lists)",
    )
    parser.add_argument(
        "--no-autotune",
        action="store_true",
        help="HLR / HLR++ score in the fixed default tiles instead of measured ones",
    )
    parser.add_argument("--quick", action="store_true", help="ml-100k, 100 users, random")
    args = parser.parse_args(argv)
    if args.no_autotune:
        os.environ["HLRM_AUTOTUNE"] = "0"
    os.environ["HLRM_TRITON_PRECISION"] = args.triton_precision
    if args.quick:
        args.dataset, args.users, args.train_epochs, args.repeats = "ml-100k", 100, 0, 2
        args.run_dir = []
    return args


def sample_users(split, n_users: int, seed: int) -> np.ndarray:
    """``n_users`` users with test items (those an evaluation ranks for), sorted."""
    candidates = np.flatnonzero(np.diff(split.test.indptr) > 0)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(candidates, size=min(n_users, len(candidates)), replace=False)
    return np.sort(chosen)


def timed_lists(
    model: Recommender, scorer: str, args: argparse.Namespace, work: dict[str, Any]
) -> tuple[float, np.ndarray]:
    """Best wall time of the repeats (after a 4-user warm-up) and the lists."""
    users, pools, exclude = work["users"], work["pools"], work["exclude"]
    common.rank(model, scorer, users[:4], pools, exclude, args.k, None, args.device)
    return common.best_of(
        lambda: common.rank(
            model,
            scorer,
            users,
            pools,
            exclude,
            args.k,
            args.block_users,
            args.device,
            args.score_memory,
        ),
        args.repeats,
    )


def accuracy(model: Recommender, work: dict[str, Any], k: int) -> dict[str, float]:
    """Largest |score - broadcast| on the first 8 users: of ``score`` over every item and of
    the pruned path over the items it scored."""
    users = torch.from_numpy(work["users"][:8]).to(model.user_embeddings.device)
    pools = pool_rows(work["pools"], slice(0, 8))
    reference = common.REFERENCES[model.name](model, users, pools)
    with torch.no_grad():
        diff = (model.score(users, pools) - reference).abs().max().item()
    result = {"max_abs_diff": diff}
    if common.has_pruning(model, users, pools):
        excluded = torch.from_numpy(work["exclude"][work["users"][:8]].toarray() > 0)
        pruned = common.forced_pruned_scores(model, users, pools, excluded.to(users.device), k)
        kept = torch.isfinite(pruned)
        result["max_abs_diff_pruned"] = (pruned - reference)[kept].abs().max().item()
    return result


def pruning_shares(model: Recommender, work: dict[str, Any], k: int) -> dict[str, float]:
    """Shares of the recommendable (user, item) pairs that get an exact score: with the pruned
    path, and with the issue's triangle bound given the exact k-th best distance."""
    device = model.user_embeddings.device
    users = torch.from_numpy(work["users"][:200]).to(device)
    pools = pool_rows(work["pools"], slice(0, 200))
    if not common.has_pruning(model, users, pools):
        return {}
    assert isinstance(model, MemoryTranslationModel)
    excluded = torch.from_numpy(work["exclude"][work["users"][:200]].toarray() > 0).to(device)
    allowed = (~excluded).sum().item()
    pruned = common.forced_pruned_scores(model, users, pools, excluded, k)
    scored = (torch.isfinite(pruned) & ~excluded).sum().item() / allowed
    with torch.no_grad():
        distances = -model.score(users, pools).masked_fill(excluded, -math.inf)
    tau = distances.kthvalue(k, dim=1, keepdim=True).values
    bounds = model.coefficient_bounds(users, pools)
    radius = bounds.mass.unsqueeze(1) * model.lram.memory.norm(dim=1).max()
    gap = squared_distances(model.user_embeddings[users], model.item_embeddings).sqrt() - radius
    triangle = gap.clamp_min(0.0).pow(2)
    tri_scored = ((triangle <= tau) & ~excluded).sum().item() / allowed
    return {"scored": scored, "tri_scored": tri_scored}


def block_table(model: Recommender, work: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Users per second of ``model.score`` on the same users and pools in user blocks of
    :data:`BLOCKS` (best of ``max(3, repeats)`` interleaved rounds), and whether the scores are
    bit-identical across them."""
    device = model.user_embeddings.device
    users = torch.from_numpy(work["users"]).to(device)
    pools = work["pools"]
    row: dict[str, Any] = {}
    reference = None
    same = True
    best = dict.fromkeys(BLOCKS, math.inf)
    best_cpu = dict.fromkeys(BLOCKS, math.inf)  # process CPU time: less moved by other jobs
    with torch.inference_mode():
        row["tiles"] = "x".join(map(str, model.chosen_tiles(users, pools)))  # measured here
        # Rounds over the blocks, not each block's repeats in a row: on a shared machine the
        # load drifts, and interleaving gives every block the same chance of a quiet moment.
        for _ in range(max(3, repeats)):
            for block in BLOCKS:
                started, started_cpu = time.perf_counter(), time.process_time()
                scores = torch.cat(
                    [
                        model.score(users[s : s + block], pool_rows(pools, slice(s, s + block)))
                        for s in range(0, len(users), block)
                    ]
                )
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[block] = min(best[block], time.perf_counter() - started)
                best_cpu[block] = min(best_cpu[block], time.process_time() - started_cpu)
                reference = scores if reference is None else reference
                same = same and torch.equal(scores, reference)
    for block in BLOCKS:
        row[f"ups_block{block}"] = len(users) / best[block]
    speeds = [row[f"ups_block{block}"] for block in BLOCKS]
    row["block_spread"] = max(speeds) / min(speeds)
    row["block_cpu_spread"] = max(best_cpu.values()) / min(best_cpu.values())
    row["same_across_blocks"] = same
    return row


def bench_model(model: Recommender, params: str, split, args: argparse.Namespace) -> dict[str, Any]:
    model = model.to(args.device).eval()
    if hasattr(model, "scoring_backend"):
        model.scoring_backend = args.backend
    users = sample_users(split, args.users, args.seed)
    pools = None
    if model.uses_history:
        sampler = HistorySampler(split.train_valid, model.history_size, "random", args.device)
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        pools = sampler.sample(torch.from_numpy(users), generator=generator)
    work = {"users": users, "pools": pools, "exclude": split.train_valid}
    row: dict[str, Any] = {
        "model": model.name,
        "dataset": split.name,
        "params": params,
        "users": len(users),
        "items": split.n_items,
        "k": args.k,
        "history_size": model.history_size if model.uses_history else None,
        "device": args.device,
        "broadcast_chunk": common.broadcast_chunk(model),
        "block_users": args.block_users,
        "score_memory_mib": args.score_memory,
        "backend": args.backend,
        "triton_precision": args.triton_precision,
    }
    scorers = args.scorers.split(",")
    lists = {}
    for scorer in scorers:
        seconds, lists[scorer] = timed_lists(model, scorer, args, work)
        row[f"{scorer}_s"] = seconds
        row[f"{scorer}_ups"] = len(users) / seconds
    for numerator, denominator, key in RATIOS:
        if numerator in lists and denominator in lists:
            row[key] = row[f"{numerator}_s"] / row[f"{denominator}_s"]
    reference = scorers[0]
    row["same_top_k"] = all(np.array_equal(lists[reference], lists[s]) for s in scorers)
    row["differing_lists"] = {
        scorer: int((lists[scorer] != lists[reference]).any(1).sum()) for scorer in scorers[1:]
    }
    row.update(accuracy(model, work, args.k))
    row.update(pruning_shares(model, work, args.k))
    if model.name in ("hlr", "hlr++"):
        row.update(block_table(model, work, args.repeats))
    if args.memory:
        for scorer in scorers:
            job = common.Job.of(
                model,
                users,
                pools,
                split.train_valid,
                args.k,
                scorer,
                args.block_users,
                args.device,
                args.score_memory,
            )
            row[f"{scorer}_mib"] = common.measure_in_child(job)["peak_bytes"] / common.MIB
        if "default" in lists and "broadcast" in lists:
            row["memory_ratio"] = row["default_mib"] / max(row["broadcast_mib"], 1e-9)
    return row


def models(runs: list[Run], split, args: argparse.Namespace) -> Iterator[tuple[Recommender, str]]:
    """The models to benchmark with a label of their parameters, built one at a time."""
    for run in runs:
        if run.split.train.shape != split.train.shape:
            raise SystemExit(f"{run.path}: every --run-dir must share one dataset and split")
        yield run.model, f"run {run.path.name}"
    if runs:
        return
    params = f"trained {args.train_epochs} ep" if args.train_epochs else "random"
    for name in args.models.split(","):
        model = common.build_model(
            name,
            split,
            history_size=args.history_size,
            train_epochs=args.train_epochs,
            seed=args.seed,
            cache_dir=args.cache_dir,
        )
        yield model, params


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    runs = [Run.open(path) for path in args.run_dir]
    split = runs[0].split if runs else common.load(args.dataset)
    info = common.machine()
    print(f"# {split.name}: {split.n_users} users, {split.n_items} items; {info}")
    print(f"# command: {' '.join(['python', *sys.argv])}")
    rows = []
    for model, params in models(runs, split, args):
        row = bench_model(model, params, split, args)
        rows.append(row)
        common.emit(row, info)
    common.finish(rows, COLUMNS, info, args.json_out)


if __name__ == "__main__":
    main()
