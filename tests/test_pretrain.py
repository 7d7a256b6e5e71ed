"""The two-stage default of HLR and HLR++: a CML first, then the relation model from its
embeddings with a zero memory (docs/results.md, "Defaults")."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from hlrm.config import ModelConfig, RunConfig
from hlrm.data.pipeline import DataConfig
from hlrm.errors import ConfigError, HlrmError
from hlrm.runs import Run, pretrain_config, train
from hlrm.training.trainer import TrainConfig


def config(model="hlr", path="unused.csv", **train_options) -> RunConfig:
    return RunConfig(
        seed=7,
        data=DataConfig(path=str(path), user_core=1, item_core=1),
        model=ModelConfig(model, {"dim": 8, **({"history_size": 5} if model != "cml" else {})}),
        train=TrainConfig(device="cpu", batch_size=256, **train_options),
    )


def test_hlr_defaults_to_a_pretrained_cml_with_a_zero_memory():
    resolved = config().resolved()
    assert resolved.train.pretrain == "cml"
    assert resolved.model.params["memory_init"] == "zero"
    assert (resolved.train.lr, resolved.train.epochs, resolved.train.negatives) == (2e-4, 15, 10)
    stage = pretrain_config(resolved)
    assert stage.model.name == "cml" and stage.model.params["dim"] == 8
    assert stage.train.pretrain == "none" and stage.train.lr == 1e-3  # CML's own recipe
    scratch = config(pretrain="none").resolved()
    assert scratch.model.params["memory_init"] == "normal" and scratch.train.lr == 1e-3
    assert config("cml").resolved().train.pretrain == "none"


def test_an_explicit_starting_point_replaces_pretraining():
    explicit = config()
    explicit.init_from = "somewhere"
    assert explicit.resolved().train.pretrain == "none"
    both = config(pretrain="cml")
    both.init_from = "somewhere"
    with pytest.raises(ConfigError, match="both give the starting point"):
        both.resolved()
    with pytest.raises(ConfigError, match="pretrain must be one of"):
        config(pretrain="bpr").resolved()


def small_log(path):
    """60 users, 40 items, about a quarter of the pairs: a CML's 100 epochs take seconds."""
    rng = np.random.default_rng(0)
    users, items = np.nonzero(rng.random((60, 40)) < 0.25)
    pd.DataFrame({"user": users, "item": items}).to_csv(path, index=False)
    return path


def test_the_second_stage_starts_at_the_first_and_a_rerun_reuses_it(tmp_path):
    data = small_log(tmp_path / "log.csv")
    notes: list[str] = []
    run = train(config(path=data, epochs=2), tmp_path / "run", progress=False, log=notes.append)
    stage = tmp_path / "run" / "pretrain"
    cml = Run.open(stage)
    assert cml.config.model.name == "cml" and run.model.name == "hlr"
    assert json.loads((stage / "metrics.json").read_text())["ndcg@10"] > 0
    assert any("stage 1 of 2" in note for note in notes)
    # with a vanishing learning rate the HLR stage keeps the CML's embeddings
    frozen = train(config(path=data, epochs=1, lr=1e-12), None, progress=False)
    for name in ("user_embeddings", "item_embeddings"):
        assert torch.allclose(getattr(frozen.model, name), getattr(cml.model, name), atol=1e-6)
    # a new run directory holding a finished first stage reuses it
    rerun = tmp_path / "again"
    shutil.copytree(stage, rerun / "pretrain")
    notes.clear()
    again = train(config(path=data, epochs=2), rerun, progress=False, log=notes.append)
    assert not any("stage 1 of 2" in note for note in notes)
    assert again.metrics["ndcg@10"] == run.metrics["ndcg@10"]


def test_keep_start_scores_epoch_zero_and_keeps_it_when_training_hurts(tmp_path):
    from hlrm.models import create_model
    from hlrm.training.trainer import Trainer
    from test_training import random_split

    split = random_split()
    torch.manual_seed(0)
    model = create_model("cml", split.n_users, split.n_items, dim=8)
    start = model.user_embeddings.detach().clone()
    config = TrainConfig(epochs=2, lr=50.0, keep_start=True, device="cpu").for_model(model)
    trainer = Trainer(model, split, config, progress=False, checkpoint_dir=tmp_path)
    history = trainer.fit()
    assert [record.epoch for record in history] == [0, 1, 2]
    assert history[0].best and history[0].valid_metric is not None
    if trainer.best_epoch == 0:  # an absurd learning rate: the start stays the best
        trainer.load_best()
        assert torch.equal(model.user_embeddings, start)


def test_a_finished_stage_trained_otherwise_is_refused(tmp_path):
    data = small_log(tmp_path / "log.csv")
    train(config(path=data, epochs=1), tmp_path / "run", progress=False)
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "run" / "pretrain", other / "pretrain")
    changed = config(path=data, epochs=1)
    changed.model.params["dim"] = 6
    with pytest.raises(HlrmError, match="first stage trained with other options"):
        train(changed, other, progress=False)
