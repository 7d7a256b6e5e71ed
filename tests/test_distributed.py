"""Several processes give the single-process results: sharded evaluation (exactly), one DDP
epoch (within float tolerance), and only rank 0 writes (2 gloo processes on CPU)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from distributed_helpers import run_ranks
from hlrm import distributed
from hlrm.data.pipeline import DataConfig, split_frame
from hlrm.data.synthetic import make_synthetic
from hlrm.evaluation.protocol import evaluate
from hlrm.models.base import create_model


def small_split():
    frame = make_synthetic(n_users=300, n_items=200, interactions_per_user=12, seed=7)
    return split_frame(frame, DataConfig(format="dataframe"))


def evaluated(name: str, options: dict) -> tuple[dict, pd.DataFrame, np.ndarray]:
    """One model (fixed random weights) evaluated with ``options``, in this process's share."""
    split = small_split()
    torch.manual_seed(3)
    params = {"dim": 16}
    if name == "hlr":
        params.update(n_slots=8, history_size=5)
    model = create_model(name, split.n_users, split.n_items, **params)
    model.prepare(split.train)
    result = evaluate(model, split, ks=(5, 10), block_users=16, **options)
    return result.metrics, result.per_user, result.recommendations


@pytest.mark.parametrize(
    ("name", "options"),
    [("cml", {}), ("hlr", {}), ("cml", {"cohorts": 3, "cohort_size": 70})],
    ids=["cml", "hlr-pools", "cml-cohorts"],
)
def test_sharded_evaluation_gives_exactly_the_single_process_metrics(name, options):
    metrics, per_user, lists = evaluated(name, options)
    ranks = run_ranks(evaluated, 2, name, options)
    for shard_metrics, _, _ in ranks:
        assert shard_metrics.keys() == metrics.keys()
        for key, value in metrics.items():  # every rank, every value, bit for bit
            assert shard_metrics[key] == value or (np.isnan(value) and np.isnan(shard_metrics[key]))
    gathered, gathered_lists = ranks[0][1], ranks[0][2]
    pd.testing.assert_frame_equal(gathered, per_user)
    np.testing.assert_array_equal(gathered_lists, lists)
    assert 0 < len(ranks[1][1]) < len(per_user)  # rank 1 ranked users of its own


def test_shards_cover_every_position_once_in_whole_blocks(monkeypatch):
    for world in (1, 2, 3, 5):
        covered = []
        for me in range(world):
            monkeypatch.setattr(distributed, "world_size", lambda w=world: w)
            monkeypatch.setattr(distributed, "rank", lambda r=me: r)
            part = distributed.shard(103, unit=10)
            assert part.start % 10 == 0
            covered.extend(range(part.start, part.stop))
        assert covered == list(range(103))


def test_exact_parts_add_up_to_the_correctly_rounded_sum():
    import math

    values = np.random.default_rng(0).random(10_001) * 1e-3
    values[::7] = 1.0 / 3.0
    cuts = [values[:1234], values[1234:9000], values[9000:]]
    parts = np.array([distributed.exact_parts(cut) for cut in cuts])
    assert math.fsum(parts.ravel().tolist()) == math.fsum(values.tolist())
