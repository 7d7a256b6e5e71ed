"""Screen training recipes under one protocol: each named recipe is trained on the same split and
reported with its best epoch's validation metric and its test NDCG@10 on all test users.

    python benchmarks/recipes.py --protocol configs/compare/hlr-paper-lastfm-2k-cpu.toml \
        --recipe 'cml-hinge: model=cml loss=hinge negatives=1 epochs=100' \
        --recipe 'cml-softmax: model=cml loss=softmax negatives=500 shared_negatives=true'

A recipe is ``label: key=value ...``; keys are [train] options, ``model``, ``init_from`` (the label
of an earlier recipe of the same invocation, trained first) and any model option. The protocol
file supplies data, split and evaluation (a comparison or run configuration; its [compare] and
[models.*] tables are ignored). Evaluation is on every test user (cohorts off). One JSON line per
recipe on stdout, for docs/results.md; relation models add the normalised entropy of each
attention module (1 = uniform, :mod:`hlrm.evaluation.diagnostics`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from hlrm.compare import read_toml
from hlrm.config import RunConfig, parse_value
from hlrm.evaluation.diagnostics import attention_entropy
from hlrm.runs import Run, train
from hlrm.training.trainer import TrainConfig

TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def parse_recipe(text: str) -> tuple[str, dict[str, object]]:
    label, _, body = text.partition(":")
    options = {}
    for part in body.split():
        key, _, value = part.partition("=")
        options[key] = parse_value(value)
    return label.strip(), options


def recipe_config(protocol: dict, options: dict[str, object], runs: dict[str, Path]) -> RunConfig:
    raw = {
        key: value for key, value in protocol.items() if key in ("seed", "data", "train", "eval")
    }
    raw = json.loads(json.dumps(raw))  # deep copy (TOML values are JSON-safe except inf)
    raw.setdefault("train", {})
    raw.setdefault("eval", {})
    raw["eval"].update(cohorts=0, max_users=0)
    model: dict[str, object] = {}
    for key, value in options.items():
        if key == "model":
            model["name"] = value
        elif key == "init_from":
            raw["init_from"] = str(runs.get(str(value), value))  # a label, or a run directory
        elif key in TRAIN_KEYS:
            raw["train"][key] = value
        else:
            model[key] = value
    raw["model"] = model
    return RunConfig.from_dict(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", required=True, type=Path)
    parser.add_argument("--recipe", action="append", required=True)
    parser.add_argument("--out", type=Path, help="keep the run directories here")
    args = parser.parse_args()
    protocol = read_toml(args.protocol)
    root = args.out or Path(tempfile.mkdtemp(prefix="hlrm-recipes-"))
    runs: dict[str, Path] = {}
    for text in args.recipe:
        label, options = parse_recipe(text)
        config = recipe_config(protocol, options, runs)
        started = time.perf_counter()
        run_dir = root / label
        train(config, run_dir, progress=False)
        runs[label] = run_dir
        fitted = not (run_dir / "history.csv").is_file()  # closed-form baselines have no epochs
        history = pd.DataFrame() if fitted else pd.read_csv(run_dir / "history.csv")
        kept = None if fitted else history[history["best"]].iloc[-1]
        best = json.loads((run_dir / "metrics.json").read_text())
        row = {
            "protocol": str(args.protocol),
            "recipe": label,
            "options": options,
            "epochs_run": 0 if fitted else int((history["epoch"] > 0).sum()),  # 0: the start
            "best_epoch": None if kept is None else int(kept["epoch"]),
            "valid_metric": (
                None
                if kept is None or pd.isna(kept["valid_metric"])
                else round(kept["valid_metric"], 4)
            ),
            "seconds": round(time.perf_counter() - started, 1),
            "test_ndcg@10": round(best["ndcg@10"], 4),
            "test_recall@10": round(best["recall@10"], 4),
            "test_users": best["protocol"].get("users"),
        }
        trained = Run.open(run_dir)
        entropy = attention_entropy(trained.model, trained.split)
        if entropy:
            row["attention_entropy"] = {key: round(value, 4) for key, value in entropy.items()}
        print(json.dumps(row, default=str), flush=True)
    print(f"# run directories: {root}", file=sys.stderr)


if __name__ == "__main__":
    main()
