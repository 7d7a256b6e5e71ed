"""Losses, sampling, projection, the trainer's determinism, resume and NaN handling."""

import numpy as np
import pytest
import torch

from hlrm.data.matrix import SplitData, binary_csr
from hlrm.errors import TrainingError
from hlrm.models import create_model
from hlrm.models.base import TrainBatch
from hlrm.training.losses import HingeObjective
from hlrm.training.sampler import NegativeSampler, PairBatches
from hlrm.training.trainer import TrainConfig, Trainer


def random_split(n_users=60, n_items=40, seed=0) -> SplitData:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.25
    users, items = np.nonzero(dense)
    part = rng.choice(3, size=len(users), p=[0.7, 0.1, 0.2])
    shape = (n_users, n_items)
    mats = [binary_csr(users[part == p], items[part == p], shape) for p in range(3)]
    return SplitData(*mats, user_ids=np.arange(n_users), item_ids=np.arange(n_items))


def test_hinge_all_negatives_and_reductions():
    pos = torch.tensor([1.0, 0.2])
    neg = torch.tensor([[1.2, 0.1], [2.0, 0.1]])
    terms = HingeObjective(margin=0.5).terms(pos, neg)
    expected = torch.tensor([[0.3, 1.4], [0.0, 0.6]])
    assert torch.allclose(terms, expected)
    assert torch.isclose(HingeObjective(reduction="sum").reduce(terms), expected.sum())
    assert torch.isclose(HingeObjective(reduction="mean").reduce(terms), expected.mean())


def test_hinge_closest_negative_and_rank_weight():
    pos = torch.tensor([1.0])
    neg = torch.tensor([[1.2, 0.1, 3.0, 0.9]])
    closest = HingeObjective(margin=0.5, negative_selection="closest").terms(pos, neg)
    assert torch.allclose(closest, torch.tensor([[1.4]]))
    weighted = HingeObjective(
        margin=0.5, negative_selection="closest", rank_weight=True, n_items=100
    ).terms(pos, neg)
    # impostors: 1.2, 0.1, 0.9 violate the margin -> rank = floor(100 * 3 / 4) = 75
    assert torch.allclose(weighted, torch.tensor([[1.4 * float(np.log(76))]]))


def test_negative_sampler_never_returns_a_positive():
    split = random_split(n_users=80, n_items=30)
    dense = split.train.toarray().astype(bool)
    sampler = NegativeSampler(split.train)
    generator = torch.Generator().manual_seed(1)
    users = torch.randint(80, (20_000,), generator=generator)
    negatives = sampler.sample(users, 3, generator)
    assert negatives.shape == (20_000, 3)
    assert not dense[users.numpy()[:, None], negatives.numpy()].any()
    # every non-positive item is reachable
    assert len(np.unique(negatives.numpy())) == 30


def test_pair_batches_cover_every_interaction_once_per_epoch():
    split = random_split()
    batches = PairBatches(split.train, NegativeSampler(split.train), batch_size=7)
    seen = []
    for batch in batches.epoch(torch.Generator().manual_seed(0)):
        seen.extend(zip(batch.users.tolist(), batch.positives.tolist(), strict=True))
    coo = split.train.tocoo()
    assert sorted(seen) == sorted(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def test_projection_keeps_rows_in_the_unit_ball():
    model = create_model("cml", 30, 20, dim=8)
    with torch.no_grad():
        model.user_embeddings.mul_(5.0)
        model.user_embeddings[0] = torch.full((8,), 0.1)
    inside = model.user_embeddings[0].clone()
    model.after_step()
    norms = model.user_embeddings.norm(dim=1)
    assert (norms <= 1 + 1e-6).all()
    assert torch.equal(model.user_embeddings[0], inside)


def test_cml_distances_match_scores():
    model = create_model("cml", 5, 7, dim=4)
    batch = TrainBatch(torch.tensor([0, 3]), torch.tensor([1, 6]), torch.tensor([[2, 4], [0, 5]]))
    pos, neg = model.pair_distances(batch)
    scores = model.score(torch.tensor([0, 3]))
    assert torch.allclose(pos, -scores[[0, 1], [1, 6]], atol=1e-6)
    assert torch.allclose(neg, -scores[[[0], [1]], [[2, 4], [0, 5]]], atol=1e-6)


def train_cml(split, epochs, seed=3, **kwargs):
    torch.manual_seed(seed)
    model = create_model("cml", split.n_users, split.n_items, dim=8)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=0.01, device="cpu")
    trainer = Trainer(model, split, config, seed=seed, progress=False, **kwargs)
    return model, trainer


def test_same_seed_same_model():
    split = random_split()
    first, trainer = train_cml(split, 3)
    trainer.fit()
    second, trainer = train_cml(split, 3)
    trainer.fit()
    assert torch.equal(first.user_embeddings, second.user_embeddings)


def test_resume_equals_uninterrupted_run(tmp_path):
    split = random_split()
    straight, trainer = train_cml(split, 4, checkpoint_dir=tmp_path / "a")
    trainer.fit()

    class Interrupt(Exception):
        pass

    def stop_after_two(record):
        if record.epoch == 2:
            raise Interrupt

    _, trainer = train_cml(split, 4, checkpoint_dir=tmp_path / "b", on_epoch=stop_after_two)
    with pytest.raises(Interrupt):
        trainer.fit()
    resumed, trainer = train_cml(split, 4, seed=3, checkpoint_dir=tmp_path / "b")
    with torch.no_grad():  # a fresh process would start from a different init: resume overrides it
        resumed.user_embeddings.zero_()
    trainer.resume()
    trainer.fit()
    assert [r.epoch for r in trainer.history] == [1, 2, 3, 4]
    assert torch.equal(straight.user_embeddings, resumed.user_embeddings)
    assert torch.equal(straight.item_embeddings, resumed.item_embeddings)


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    split = random_split()
    model, trainer = train_cml(split, 2, checkpoint_dir=tmp_path)
    with torch.no_grad():
        model.user_embeddings[:] = float("nan")
    with pytest.raises(TrainingError, match="loss became nan at epoch 1"):
        trainer.fit()
    assert not (tmp_path / "best.pt").exists()


def test_early_stopping_and_best_epoch_selection():
    split = random_split()
    model, trainer = train_cml(split, 30)
    trainer.config.patience = 2
    trainer.config.select_by = "valid_loss"
    history = trainer.fit()
    best = min(history, key=lambda r: r.valid_loss)
    assert best.best
    assert len(history) < 30 or history[-1].epoch == 30


def test_default_selection_is_validation_ndcg_with_patience():
    split = random_split()
    model, trainer = train_cml(split, 30)
    assert trainer.config.select_by == "ndcg@10" and trainer.config.patience == 10
    history = trainer.fit()
    best = max(history, key=lambda r: (r.valid_metric, -r.epoch))
    assert best.best and trainer.best_epoch == best.epoch
    stale = [r for r in history if r.epoch > best.epoch]
    assert len(history) == 30 or len(stale) == 10


def test_training_reduces_validation_loss():
    split = random_split(n_users=100, n_items=50)
    model, trainer = train_cml(split, 1)
    before = trainer.validation_loss()
    trainer.config.epochs = 15
    trainer.fit()
    assert trainer.validation_loss() < before


def test_rotating_skip_reproduces_the_official_batch_loop():
    split = random_split()
    batches = PairBatches(
        split.train, NegativeSampler(split.train), batch_size=40, shuffle="once", rotating_skip=True
    )
    n = len(batches)
    assert n > 2
    # epoch 1 skips the last batch; epoch 2 starts with it; the cycle never resets
    assert batches.batch_numbers(1) == list(range(n - 1))
    assert batches.batch_numbers(2)[:2] == [n - 1, 0]
    visited = [b for e in range(1, n + 1) for b in batches.batch_numbers(e)]
    assert visited == [i % n for i in range(n * (n - 1))]
