"""Accuracy and time of the optimisers against each other: each model is trained with each
``--optimizers`` entry on the same split, seed, recipe and number of epochs, and scored on the
test split (NDCG@10, Recall@10, all test users) with the weights of the last epoch (no model
selection, so both optimisers are compared after exactly the same training). Runs alternate
between the optimisers, so the seconds compare under the same load.

Recipes: ``published`` (hinge, one uniform negative per positive) and ``default`` (the library's
recipe for the model: for CML a sampled softmax over 500 shared negatives; for HLR/HLR++ from
random weights, pretrain off, 20 per-example negatives).

    python benchmarks/optimizers.py --dataset lastfm-2k --models cml --recipes published,default \\
        --epochs 20
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

import common
from hlrm.evaluation.protocol import evaluate
from hlrm.models import create_model
from hlrm.training.trainer import TrainConfig, Trainer

COLUMNS = ["model", "recipe", "optimizer", "epochs", "seconds", "train_loss", "ndcg@10"]
COLUMNS.append("recall@10")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="lastfm-2k")
    parser.add_argument("--models", default="cml")
    parser.add_argument("--optimizers", default="adam,lazy_adam")
    parser.add_argument("--recipes", default="published,default")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--history-size", type=int, default=50)
    common.add_run_options(parser)
    return parser.parse_args(argv)


def train_and_score(
    name: str, recipe: str, optimizer: str, split, args: argparse.Namespace
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    options = common.model_options(name, args.history_size)
    model = create_model(name, split.n_users, split.n_items, **options)
    settings = dict(common.PUBLISHED_RECIPE) if recipe == "published" else {"pretrain": "none"}
    settings.update(select_by="valid_loss", patience=0, keep_start=False)
    config = TrainConfig(epochs=args.epochs, device=args.device, optimizer=optimizer, **settings)
    trainer = Trainer(model, split, config, seed=args.seed, progress=False)
    started = time.perf_counter()
    history = trainer.fit()  # the weights stay those of the last epoch (load_best is not called)
    seconds = time.perf_counter() - started
    result = evaluate(model.eval(), split, ks=(10,), device=args.device)
    return {
        "model": name,
        "recipe": recipe,
        "optimizer": optimizer,
        "compiled": trainer._compiled is not None,
        "epochs": args.epochs,
        "seconds": seconds,  # training and the validation loss of each epoch
        "train_loss": history[-1].train_loss,
        "ndcg@10": result.metrics["ndcg@10"],
        "recall@10": result.metrics["recall@10"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    split = common.load(args.dataset)
    info = common.machine()
    common.print_header(split, info)
    rows = []
    for name in args.models.split(","):
        for recipe in args.recipes.split(","):
            for optimizer in args.optimizers.split(","):
                rows.append(train_and_score(name, recipe, optimizer, split, args))
                common.emit(rows[-1], info)
    print(f"# load average after: {os.getloadavg()}")
    common.finish(rows, COLUMNS, info, args.json_out)


if __name__ == "__main__":
    main()
