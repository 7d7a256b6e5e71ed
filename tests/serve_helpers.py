"""Runs for the serving, export and retrieval tests: in memory with untrained weights (no
training time), or trained for one short epoch into a run directory (for the console script)."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import numpy as np

from hlrm.config import RunConfig
from hlrm.data.matrix import SplitData
from hlrm.data.pipeline import DataConfig, load_split
from hlrm.models import create_model
from hlrm.runs import Run, train


@cache
def synthetic_split() -> SplitData:
    """The built-in synthetic data (2,000 users, 1,000 items) with a title per item."""
    split = load_split(DataConfig(dataset="synthetic").resolved())
    titles = np.array([f"Item {item} of group {int(item) % 10}" for item in split.item_ids])
    return dataclasses.replace(split, item_titles=titles)


def random_run(name: str, seed: int = 0, **params) -> Run:
    """A run of ``name`` with random weights (torch seeded) on the synthetic split."""
    import torch

    torch.manual_seed(seed)
    split = synthetic_split()
    config = RunConfig(data=DataConfig(dataset="synthetic"))
    config.model.name = name
    config.model.params = dict(params)
    model = create_model(name, split.n_users, split.n_items, **params)
    model.prepare(split.train)
    model.eval()
    return Run(config, split, model, metrics={"ndcg@10": 0.5})


def trained_run_dir(path: Path, name: str, **params) -> Path:
    """One epoch of ``name`` on the synthetic data into ``path`` (a few seconds)."""
    config = RunConfig(data=DataConfig(dataset="synthetic"))
    config.model.name = name
    config.model.params = dict(params)
    config.train.epochs = 1
    config.train.device = "cpu"
    config.train.select_by = "valid_loss"
    config.eval.ks = [10]
    config.eval.max_users = 100
    train(config, path, progress=False)
    return path
