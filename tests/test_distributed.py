"""Several processes give the single-process results: sharded evaluation (exactly), one DDP
epoch (within float tolerance), and only rank 0 writes (2 gloo processes on CPU)."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def trained(name: str, data: str | None, options: dict) -> tuple[dict, list]:
    """One epoch of ``name`` (global batch 999, seed 2021) in this process's share."""
    from hlrm.data.pipeline import load_split
    from hlrm.training.trainer import TrainConfig, Trainer

    split = small_split() if data is None else load_split(DataConfig(dataset=data))
    torch.manual_seed(5)
    params = {"dim": 16, "n_slots": 4, "history_size": 5} if name == "hlr" else {"dim": 16}
    model = create_model(name, split.n_users, split.n_items, **params)
    config = TrainConfig(epochs=1, batch_size=999, device="cpu", **options)
    trainer = Trainer(model, split, config, seed=2021, progress=False)
    trainer.fit()
    weights = {key: value.numpy().copy() for key, value in model.state_dict().items()}
    history = [(r.train_loss, r.valid_loss, r.valid_metric) for r in trainer.history]
    return weights, np.array(history, dtype=np.float64)


def assert_same_training(name: str, data: str | None, options: dict) -> None:
    weights, history = trained(name, data, options)
    ranks = run_ranks(trained, 2, name, data, options)
    for shard_weights, shard_history in ranks:
        for key, value in weights.items():
            np.testing.assert_allclose(shard_weights[key], value, rtol=0, atol=2e-5, err_msg=key)
        np.testing.assert_allclose(shard_history, history, rtol=1e-5)
    for key in weights:  # DDP keeps the replicas identical
        np.testing.assert_array_equal(ranks[0][0][key], ranks[1][0][key])


@pytest.mark.dataset
def test_one_ddp_epoch_on_ml100k_gives_the_single_process_parameters(data_dir, monkeypatch):
    # The spawned processes read the dataset through the library's own lookup, which knows
    # only $HLRM_DATA_DIR and the cache: name the directory the fixture found (it may be the
    # default ../shared/data with the variable unset).
    monkeypatch.setenv("HLRM_DATA_DIR", str(data_dir))
    assert_same_training("cml", "ml-100k", {})


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("hlr", {"pretrain": "none", "select_by": "valid_loss"}),
        ("cml", {"loss": "hinge", "negatives": 3, "shared_negatives": False, "reduction": "sum"}),
    ],
    ids=["hlr", "cml-hinge-sum"],
)
def test_one_ddp_epoch_gives_the_single_process_parameters(name, options):
    assert_same_training(name, None, options)


def train_recording_writes(run_dir: str) -> list[str]:
    """``hlrm.runs.train`` into ``run_dir``; the files this process wrote (every hlrm write
    goes through ``atomic_path``) and whether it took the run directory's lock."""
    import contextlib

    from hlrm import fileio, runs
    from hlrm.config import ModelConfig, RunConfig
    from hlrm.data.pipeline import DataConfig as Data
    from hlrm.training import checkpoint
    from hlrm.training.trainer import TrainConfig

    written: list[str] = []
    original_path, original_lock = fileio.atomic_path, runs.lock_run_directory

    @contextlib.contextmanager
    def recording(path):
        written.append(str(path))
        with original_path(path) as tmp:
            yield tmp

    def locking(path):
        written.append(f"lock {path}")
        return original_lock(path)

    for module in (fileio, runs, checkpoint):
        module.atomic_path = recording
    runs.lock_run_directory = locking
    config = RunConfig(
        seed=1,
        data=Data(dataset="synthetic"),
        model=ModelConfig("cml", {"dim": 8}),
        train=TrainConfig(epochs=2, negatives=20, device="cpu"),
    )
    runs.train(config, run_dir, progress=False)
    return written


def test_rank_0_is_the_only_writer(tmp_path):
    run_dir = tmp_path / "run"
    written = run_ranks(train_recording_writes, 2, str(run_dir))
    assert written[1] == []
    names = {Path(entry.split(" ")[-1]).name for entry in written[0]}
    assert {"config.toml", "split.npz", "meta.json", "best.pt", "last.pt", "metrics.json"} <= names
    assert json.loads((run_dir / "meta.json").read_text())["processes"] == 2
    per_user = pd.read_parquet(run_dir / "per_user_metrics.parquet")
    assert len(per_user) == json.loads((run_dir / "metrics.json").read_text())["protocol"]["users"]


SMALL_RUN = ["--dataset", "synthetic", "--model", "cml", "--emb-size", "16", "--negatives", "50"]
SMALL_RUN += ["--device", "cpu", "-q"]


def test_torchrun_trains_and_a_single_process_resumes_to_the_same_weights(tmp_path):
    """``torchrun -m hlrm train`` on 2 processes for one epoch, then ``--resume`` in one process
    for a second: the weights of an uninterrupted single-process run (global batch and seed
    define the run, not the number of processes)."""
    import subprocess
    import sys

    from hlrm.training.checkpoint import load_checkpoint

    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launched = subprocess.run(
        [*torchrun, "--nproc-per-node", "2", "-m", "hlrm", "train", *SMALL_RUN, "--epochs", "1"]
        + ["--run-dir", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "meta.json").read_text())["processes"] == 2
    for args in (
        ["--run-dir", str(tmp_path / "two"), "--resume"],
        ["--run-dir", str(tmp_path / "one")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "hlrm", "train", *SMALL_RUN, "--epochs", "2", *args],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    resumed = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["state_dict"]
    single = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["state_dict"]
    for key, value in single.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "args",
    [["compare", "--help"], ["tune", "--help"], ["train", "--dataset", "synthetic", "--tune", "2"]],
)
def test_single_process_commands_refuse_torchrun_in_one_line(monkeypatch, capsys, args):
    from cli_helpers import assert_clean_error, run_cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_clean_error(code, err, "one process")
