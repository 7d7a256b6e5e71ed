"""Training benchmark: examples per second and seconds per epoch of every trainable model, with
two same-run references.

* ``implicit-bpr``: ``implicit``'s multi-threaded C++ BPR (``implicit.cpu.bpr``, 100 factors) on
  the same training matrix, the field's speed anchor; one iteration = one example per interaction.
* ``naive-cml``: CML trained by a plain per-example PyTorch loop (Python negative sampling with
  rejection, one small autograd graph per example, one Adam step per 1000 examples): what the
  library's vectorised batches replace. Same model, loss, optimiser and projection as ``cml``.

Every library model is trained by the library's own pieces (``Trainer``'s batches and its
``train_step``: the model loss, the optimiser, the post-step projection, or the compiled CML step
where it applies) with batch 1000 and lr 1e-3, once per ``--optimizers`` entry (``adam``: dense,
the default; ``lazy_adam``: row-sparse, :mod:`hlrm.training.optim`; ``adam+compile``: dense Adam
with the loss compiled by ``torch.compile``, ``TrainConfig.compile``) and per ``--recipes`` entry
(``published``: hinge, one negative per positive, as the paper; ``default``: the library's
default recipe for the model, for HLR/HLR++ the one of their training after the CML stage). Each
step is split into ``sample`` (pairs, negatives, history pools) and ``step`` (everything else);
one untimed step comes first (it compiles the Numba step or the ``torch.compile`` graph).
``--repeats`` runs the whole list that many times, interleaved, so options compare under the
same load. ``--batches N`` times the first N batches of an epoch and extrapolates seconds per
epoch (marked ``extrapolated``); 0 times the whole epoch. An "example" is one (user, positive,
negative) triplet, so a recipe with k negatives does k examples per positive.

``--quick``: ml-100k, every model, whole epochs (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Any

import torch

import common
from hlrm.data.matrix import SplitData
from hlrm.models import create_model
from hlrm.training.trainer import TrainConfig, Trainer, epoch_generator

MODELS = "cml,bpr,lrml,transcf,adacml,hlr,hlr++"
PHASES = ("sample", "step")
RECIPES = ("published", "default")
COLUMNS = [
    "model",
    "recipe",
    "optimizer",
    "repeat",
    "examples",
    "examples_per_s",
    "s_per_epoch",
    "extrapolated",
    *[f"{phase}_share" for phase in PHASES],
    "vs_naive_cml",
    "vs_implicit_bpr",
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument(
        "--optimizers", default="adam", help="comma-separated: adam, lazy_adam, adam+compile"
    )
    parser.add_argument("--recipes", default="published", help=f"comma-separated: {RECIPES}")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of the list")
    parser.add_argument("--batches", type=int, default=0, help="0: a whole epoch")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--history-size", type=int, default=50, help="P of AdaCML, HLR, HLR++")
    parser.add_argument("--naive-examples", type=int, default=5000, help="naive CML loop length")
    parser.add_argument("--implicit-iterations", type=int, default=3)
    common.add_run_options(parser)
    parser.add_argument("--quick", action="store_true", help="ml-100k, whole epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.batches = "ml-100k", 0
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def library_model(
    name: str, split: SplitData, args: argparse.Namespace, recipe: str, optimizer: str
) -> dict[str, Any]:
    """Times the library's training steps of ``name`` under ``recipe`` with ``optimizer``."""
    torch.manual_seed(args.seed)
    options = {"history_size": args.history_size} if name in ("adacml", "hlr", "hlr++") else {}
    model = create_model(name, split.n_users, split.n_items, **options)
    settings = common.PUBLISHED_RECIPE if recipe == "published" else {}
    config = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        lr=1e-3,
        device=args.device,
        optimizer=optimizer.removesuffix("+compile"),
        compile=optimizer.endswith("+compile"),
        **settings,
    )
    trainer = Trainer(model, split, config, seed=args.seed, progress=False)
    device = trainer.device
    model.train()
    n_batches = len(trainer.train_batches)
    limit = min(args.batches or n_batches, n_batches)
    # one untimed step first: compiles the Numba step where it applies (cached on disk after the
    # first run on a machine) and warms the allocator; the timed epoch starts afresh
    trainer.train_step(next(trainer.train_batches.epoch(epoch_generator(args.seed, 0, device))))
    seconds = dict.fromkeys(PHASES, 0.0)
    examples = 0
    batches = trainer.train_batches.epoch(epoch_generator(args.seed, 1, device))
    for _ in range(limit):
        started = time.perf_counter()
        batch = next(batches)
        _sync(device)
        sampled = time.perf_counter()
        trainer.train_step(batch)
        _sync(device)
        stepped = time.perf_counter()
        seconds["sample"] += sampled - started
        seconds["step"] += stepped - sampled
        examples += batch.negatives.numel()
    total = sum(seconds.values())
    per_epoch = split.train.nnz * trainer.train_batches.n_negatives
    row = _rates(name, examples, total, per_epoch)
    row.update(recipe=recipe, optimizer=optimizer, compiled=trainer._compiled is not None)
    row["extrapolated"] = limit < n_batches
    row.update({f"{phase}_share": seconds[phase] / total for phase in PHASES})
    return row


def naive_cml(split: SplitData, args: argparse.Namespace) -> dict[str, Any]:
    """The per-example loop: ``--naive-examples`` shuffled training pairs."""
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = create_model("cml", split.n_users, split.n_items).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    coo = split.train.tocoo()
    pairs = list(zip(coo.row.tolist(), coo.col.tolist(), strict=True))
    rng.shuffle(pairs)
    pairs = pairs[: args.naive_examples]
    indptr, indices = split.train.indptr, split.train.indices
    known = [set(indices[indptr[u] : indptr[u + 1]].tolist()) for u in range(split.n_users)]
    margin = 0.5
    started = time.perf_counter()
    for start in range(0, len(pairs), args.batch_size):
        losses = []
        for user, positive in pairs[start : start + args.batch_size]:
            negative = rng.randrange(split.n_items)
            while negative in known[user]:
                negative = rng.randrange(split.n_items)
            vector = model.user_embeddings[user]
            near = (vector - model.item_embeddings[positive]).pow(2).sum()
            far = (vector - model.item_embeddings[negative]).pow(2).sum()
            losses.append(torch.relu(margin + near - far))
        optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).mean().backward()
        optimizer.step()
        model.after_step()
    return _rates("naive-cml", len(pairs), time.perf_counter() - started, split.train.nnz)


def implicit_bpr(split: SplitData, args: argparse.Namespace) -> dict[str, Any] | None:
    """``implicit``'s CPU BPR: ``--implicit-iterations`` iterations over the training matrix."""
    try:
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        print("# implicit is not installed: no implicit-bpr reference", file=sys.stderr)
        return None
    model = BayesianPersonalizedRanking(
        factors=100,
        iterations=args.implicit_iterations,
        num_threads=args.threads,
        random_state=args.seed,
    )
    started = time.perf_counter()
    model.fit(split.train, show_progress=False)
    seconds = time.perf_counter() - started
    examples = split.train.nnz * args.implicit_iterations
    return _rates("implicit-bpr", examples, seconds, split.train.nnz)


def _rates(name: str, examples: int, seconds: float, per_epoch: int) -> dict[str, Any]:
    rate = examples / seconds
    return {
        "model": name,
        "examples": examples,
        "seconds": seconds,
        "examples_per_s": rate,
        "s_per_epoch": per_epoch / rate,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    split = common.load(args.dataset)
    info = common.machine()
    common.print_header(split, info)
    rows = []
    for repeat in range(1, args.repeats + 1):
        references = [implicit_bpr(split, args), naive_cml(split, args)]
        rows += [dict(row, repeat=repeat) for row in references if row is not None]
        for name in args.models.split(","):
            for recipe in args.recipes.split(","):
                for optimizer in args.optimizers.split(","):
                    row = library_model(name, split, args, recipe, optimizer)
                    rows.append(dict(row, repeat=repeat))
                    common.emit(rows[-1], info)
    print(f"# load average after: {os.getloadavg()}")
    references = {}
    for row in rows:  # each repeat's references divide that repeat's rows
        if row["model"] in ("naive-cml", "implicit-bpr"):
            references[(row["repeat"], row["model"])] = row["examples_per_s"]
    for row in rows:
        for reference in ("naive-cml", "implicit-bpr"):
            if (row["repeat"], reference) in references:
                column = "vs_" + reference.replace("-", "_")
                row[column] = row["examples_per_s"] / references[(row["repeat"], reference)]
        row.update(dataset=split.name, device=args.device, batch_size=args.batch_size)
    common.finish(rows, COLUMNS, info, args.json_out)


if __name__ == "__main__":
    main()
