"""Two-stage retrieval against exact full ranking: recall@k of the exact lists and speed-up.

For a sample of a run's users, the exact top-k lists come from the library's exact path
(``hlrm.evaluation.ranking.top_k_scored``, as ``hlrm recommend`` and ``hlrm serve`` rank: every
known item masked, history pools keyed by the run's seed, the exact pruned scorer where the
model has one); ``--no-prune`` adds the plain factorised scorer over every item as a second
baseline. The approximate lists come from ``hlrm.retrieval.AnnIndex.top_k_scored`` (HNSW
candidates by the CML distance, re-ranked by the exact score) with the same pools, for each
``--candidates`` count. Reported: recall@k (share of the exact list found), the share of users
whose list is identical, users per second and the speed-up over the exact path, all measured in
the same run on the same users; the index build time is reported separately (it is paid once
per server start).

``--catalogue N`` enlarges the run's catalogue to N items before measuring: the run's items stay
(so users keep their histories) and N - I new items are copies of random trained items moved by
Gaussian noise (``--noise`` times the per-dimension standard deviation of the trained item
table), projected into the model's ball. Users, memory and keys are the trained ones. This keeps
the geometry of a trained model at a size no dataset here has.

    python benchmarks/ann.py RUN_DIR --users 200 --candidates 50,100,200,500,1000
    python benchmarks/ann.py RUN_DIR --catalogue 1000000 --users 20 --candidates 200,500
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from hlrm.evaluation.ranking import PAD, top_k_scored
from hlrm.models import Recommender, create_model
from hlrm.retrieval import BUILD_WIDTH, GRAPH_DEGREE, AnnIndex
from hlrm.runs import Run
from hlrm.training.history import HistorySampler


def enlarge(model: Recommender, n_items: int, noise: float, seed: int) -> Recommender:
    """A copy of ``model`` with ``n_items`` items: the trained ones first, then noisy copies."""
    base = model.item_embeddings.detach()
    extra = n_items - len(base)
    if extra < 0:
        raise SystemExit(f"--catalogue {n_items} is smaller than the run's {len(base)} items")
    generator = torch.Generator().manual_seed(seed)
    source = torch.randint(len(base), (extra,), generator=generator)
    spread = base.std(0)
    added = base[source] + noise * spread * torch.randn(extra, base.shape[1], generator=generator)
    max_norm = float(getattr(model, "max_norm", 0.0))
    if max_norm > 0:
        norms = added.norm(dim=1, keepdim=True)
        added = added * (max_norm / norms).clamp(max=1.0)
    state = dict(model.state_dict())
    state["item_embeddings"] = torch.cat([base, added])
    if "item_biases" in state:
        state["item_biases"] = torch.cat([state["item_biases"], state["item_biases"][source]])
    big = create_model(model.name, model.n_users, n_items, **model.hparams)
    big.load_state_dict(state)
    return big.eval()


def recall(found: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """Mean share of each exact list found, and the share of identical lists."""
    shares, same = [], []
    for row_found, row_exact in zip(found, exact, strict=True):
        wanted = set(row_exact[row_exact != PAD].tolist())
        if not wanted:
            continue
        shares.append(len(wanted & set(row_found.tolist())) / len(wanted))
        same.append(bool(np.array_equal(row_found, row_exact)))
    return float(np.mean(shares)), float(np.mean(same))


def timed(function, repeats: int):
    """The result of ``function()`` and its best time over ``repeats`` calls."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return result, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", default="50,100,200,500,1000")
    parser.add_argument("--graph-degree", type=int, default=GRAPH_DEGREE)
    parser.add_argument("--build-width", type=int, default=BUILD_WIDTH)
    parser.add_argument("--catalogue", type=int, default=0, help="enlarge to this many items")
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--no-prune", action="store_true", help="also time the unpruned scorer")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run = Run.open(args.run_dir, "cpu")
    model, known = run.model, run.split.everything
    if args.catalogue:
        model = enlarge(model, args.catalogue, args.noise, args.seed)
        known = sp.csr_matrix(
            (known.data, known.indices, known.indptr), shape=(known.shape[0], args.catalogue)
        )
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(model.n_users, size=min(args.users, model.n_users), replace=False))
    sampler = None
    if model.uses_history:
        sampler = HistorySampler(
            known, model.history_size, model.history_sampling, "cpu", keyed_seed=run.config.seed
        )
    info = {
        "run": str(args.run_dir),
        "model": model.name,
        "dataset": run.split.name,
        "items": model.n_items,
        "users": len(users),
        "k": args.k,
        "catalogue": "trained" if not args.catalogue else f"enlarged, noise {args.noise}",
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
        "date": dt.date.today().isoformat(),
        "load_average": os.getloadavg()[0],  # the machine may be shared
    }
    print(json.dumps(info))

    def exact(prune: bool):
        return top_k_scored(
            model, users, known, args.k, history_sampler=sampler, device="cpu", prune=prune
        )[0]

    exact_items, exact_seconds = timed(lambda: exact(True), args.repeats)
    rows = [("exact (library path)", exact_seconds, 1.0, 1.0)]
    if args.no_prune:
        plain_items, plain_seconds = timed(lambda: exact(False), args.repeats)
        assert np.array_equal(plain_items, exact_items)
        rows.append(("exact, unpruned scorer", plain_seconds, 1.0, 1.0))

    started = time.perf_counter()
    index = AnnIndex.build(model, graph_degree=args.graph_degree, build_width=args.build_width)
    build_seconds = time.perf_counter() - started
    for count in [int(part) for part in args.candidates.split(",")]:
        index.candidates, index.search_width = count, 2 * count

        def approximate(index=index):
            return index.top_k_scored(model, users, known, args.k, history_sampler=sampler)[0]

        found, seconds = timed(approximate, args.repeats)
        share, identical = recall(found, exact_items)
        rows.append((f"ann, {count} candidates", seconds, share, identical))

    print(
        f"index build: {build_seconds:.1f} s (HNSW M={args.graph_degree}, "
        f"efConstruction={args.build_width}, {model.n_items} items)"
    )
    print(f"| ranking | users/s | speed-up | recall@{args.k} | identical lists |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, share, identical in rows:
        speed = len(users) / seconds
        print(
            f"| {label} | {speed:,.1f} | {exact_seconds / seconds:.1f}× | {share:.4f} "
            f"| {identical:.3f} |"
        )
        print(
            json.dumps(
                {
                    "ranking": label,
                    "seconds": seconds,
                    "users_per_second": speed,
                    "speedup": exact_seconds / seconds,
                    "recall": share,
                    "identical": identical,
                    "build_seconds": build_seconds,
                }
            )
        )


if __name__ == "__main__":
    main()
