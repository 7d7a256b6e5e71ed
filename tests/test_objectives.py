"""The recipe extensions: sampled softmax, shared and popularity negatives, zero-translation warm
starts and logit scales (docs/results.md measures them; here they are checked exactly)."""

import numpy as np
import pytest
import torch

from hlrm.errors import ConfigError
from hlrm.models import create_model
from hlrm.models.base import History, TrainBatch
from hlrm.training.losses import HingeObjective, SoftmaxObjective, make_objective
from hlrm.training.sampler import NegativeSampler, PairBatches
from hlrm.training.trainer import TrainConfig, Trainer
from test_training import random_split


def test_softmax_is_the_cross_entropy_of_the_positive():
    positive = torch.tensor([0.5, 1.0])
    negative = torch.tensor([[0.7, 2.0, 0.1], [1.5, 0.2, 3.0]])
    tau = 0.25
    logits = torch.cat([-positive.unsqueeze(1), -negative], 1) / tau
    expected = torch.nn.functional.cross_entropy(
        logits, torch.zeros(2, dtype=torch.long), reduction="none"
    )
    terms = SoftmaxObjective(tau).terms(positive, negative)
    torch.testing.assert_close(terms, expected)
    assert SoftmaxObjective(tau, "sum").reduce(terms) == pytest.approx(expected.sum().item())


def test_log_weights_remove_and_reweight_negatives():
    positive = torch.tensor([0.5])
    negative = torch.tensor([[0.7, 2.0, 0.1]])
    removed = torch.tensor([[0.0, -torch.inf, 0.0]])
    softmax = SoftmaxObjective(0.5)
    torch.testing.assert_close(
        softmax.terms(positive, negative, removed), softmax.terms(positive, negative[:, [0, 2]])
    )
    hinge = HingeObjective(margin=1.0)
    kept = hinge.terms(positive, negative, removed)
    assert kept[0, 1] == 0 and kept[0, 0] > 0
    closest = HingeObjective(margin=1.0, negative_selection="closest")
    # the removed negative (0.1 would be the closest) does not count
    weights = torch.tensor([[0.0, 0.0, -torch.inf]])
    assert closest.terms(positive, negative, weights).item() == pytest.approx(0.5 - 0.7 + 1.0)
    doubled = hinge.terms(positive, negative, torch.full((1, 3), float(np.log(2.0))))
    torch.testing.assert_close(doubled, 2 * hinge.terms(positive, negative))


def test_make_objective_rejects_hinge_only_options_for_softmax():
    assert isinstance(make_objective("softmax"), SoftmaxObjective)
    with pytest.raises(ConfigError):
        make_objective("softmax", negative_selection="closest")
    with pytest.raises(ConfigError):
        make_objective("bogus")
    with pytest.raises(ConfigError):
        SoftmaxObjective(0.0)


@pytest.mark.parametrize("name", ["cml", "lrml", "hlr"])
def test_shared_negatives_give_the_per_example_distances(name):
    split = random_split()
    torch.manual_seed(0)
    options = {"dim": 8} if name == "cml" else {"dim": 8, "copy": True}
    model = create_model(name, split.n_users, split.n_items, **options).double()
    users = torch.arange(10)
    positives = torch.arange(10) % split.n_items
    negatives = torch.tensor([[3, 7, 11, 19]]).expand(10, 4)
    pools = History(torch.randint(split.n_items, (10, 3)), torch.ones(10, 3, dtype=torch.bool))
    shared = TrainBatch(users, positives, negatives, pools, shared=True)
    gathered = TrainBatch(users, positives, negatives.contiguous(), pools, shared=False)
    for got, expected in zip(
        model.pair_distances(shared), model.pair_distances(gathered), strict=True
    ):
        torch.testing.assert_close(got, expected)


def test_shared_negatives_mask_the_items_a_user_has():
    split = random_split()
    sampler = NegativeSampler(split.train)
    users = torch.arange(split.n_users)
    negatives, owned = sampler.sample_shared(users, 15, torch.Generator().manual_seed(0))
    assert negatives.shape == owned.shape == (split.n_users, 15)
    assert (negatives == negatives[0]).all()
    train = split.train.toarray().astype(bool)
    expected = torch.from_numpy(train[users.numpy()[:, None], negatives.numpy()])
    assert torch.equal(owned, expected)
    batches = PairBatches(split.train, sampler, batch_size=50, n_negatives=15, shared=True)
    batch = next(batches.epoch(torch.Generator().manual_seed(1)))
    owned = torch.from_numpy(train[batch.users.numpy()[:, None], batch.negatives.numpy()])
    assert batch.shared and torch.equal(torch.isneginf(batch.negative_log_weights), owned)


def test_popularity_negatives_follow_the_smoothed_counts_and_are_reweighted():
    split = random_split(n_users=200, n_items=30)
    sampler = NegativeSampler(split.train, distribution="popularity")
    counts = np.bincount(split.train.indices, minlength=split.n_items) + 1.0
    q = counts**0.75 / (counts**0.75).sum()
    torch.testing.assert_close(sampler.probabilities, torch.from_numpy(q))
    items = torch.arange(split.n_items)
    expected = -np.log(q * split.n_items)
    torch.testing.assert_close(sampler.log_weights(items), torch.from_numpy(expected).float())
    assert NegativeSampler(split.train).log_weights(items) is None
    drawn = sampler.sample(torch.arange(200).repeat(50), 4, torch.Generator().manual_seed(0))
    train = split.train.toarray().astype(bool)
    assert not train[np.tile(np.arange(200), 50)[:, None], drawn.numpy()].any()


@pytest.mark.parametrize("name", ["lrml", "hlr", "hlr++"])
def test_zero_memory_scores_exactly_like_the_cml_it_starts_from(name):
    split = random_split()
    torch.manual_seed(0)
    cml = create_model("cml", split.n_users, split.n_items, dim=8)
    model = create_model(name, split.n_users, split.n_items, dim=8, memory_init="zero")
    with torch.no_grad():
        model.user_embeddings.copy_(cml.user_embeddings)
        model.item_embeddings.copy_(cml.item_embeddings)
    users = torch.arange(split.n_users)
    pools = History(
        torch.randint(split.n_items, (split.n_users, 4)), torch.rand(split.n_users, 4) < 0.7
    )
    torch.testing.assert_close(model.score(users, pools), cml.score(users), rtol=0, atol=1e-6)


def test_learned_scales_receive_gradients_and_stay_positive():
    split = random_split()
    model = create_model("hlr", split.n_users, split.n_items, dim=8, learn_scales=True,
                         address_scale=4.0)  # fmt: skip
    assert model.lram.log_scales.requires_grad
    torch.testing.assert_close(model.lram.scaled_keys, model.lram.keys * 4.0)
    users = torch.arange(6)
    pools = History(torch.randint(split.n_items, (6, 3)), torch.ones(6, 3, dtype=torch.bool))
    batch = TrainBatch(users, users, users.unsqueeze(1) + 1, pools)
    model.loss(batch, SoftmaxObjective()).backward()
    assert model.lram.log_scales.grad is not None and model.lram.log_scales.grad.abs().sum() > 0
    # the published model keeps its checkpoint keys
    assert "lram.log_scales" not in create_model("hlr", 3, 4, dim=4).state_dict()


def test_memory_scales_are_the_factors_the_logits_are_multiplied_by():
    scaled = create_model("hlr", 3, 4, dim=4, address_scale=11.75, attention_scale=0.3)
    address, attention = scaled.lram.scales
    assert torch.equal(scaled.lram.scaled_keys, scaled.lram.keys * torch.tensor(address))
    logits = torch.randn(5)
    assert torch.equal(scaled.lram.attention_logits(logits), logits * torch.tensor(attention))
    assert create_model("hlr", 3, 4, dim=4).lram.scales == (1.0, 1.0)


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "softmax", "negatives": 8},
        {"loss": "softmax", "negatives": 16, "shared_negatives": True},
        {"loss": "softmax", "negatives": 8, "negative_sampling": "popularity"},
        {"loss": "hinge", "negatives": 4, "shared_negatives": True},
    ],
)
def test_trainer_runs_every_objective_and_is_deterministic(options):
    split = random_split()

    def fit():
        torch.manual_seed(0)
        model = create_model("cml", split.n_users, split.n_items, dim=8)
        config = TrainConfig(epochs=3, batch_size=64, lr=1e-2, device="cpu", **options)
        trainer = Trainer(model, split, config, progress=False)
        return trainer.fit(), model

    history, model = fit()
    assert history[-1].train_loss < history[0].train_loss
    again = fit()[1]
    assert torch.equal(model.user_embeddings, again.user_embeddings)


def test_item_bias_shifts_train_distances_and_scores_alike():
    split = random_split()
    torch.manual_seed(0)
    model = create_model("cml", split.n_users, split.n_items, dim=8, item_bias=True)
    assert torch.equal(model.item_biases, torch.zeros(split.n_items))  # starts as plain CML
    with torch.no_grad():
        model.item_biases.uniform_(-0.5, 0.5)
    users = torch.tensor([0, 3])
    batch = TrainBatch(users, torch.tensor([1, 6]), torch.tensor([[2, 4], [0, 5]]))
    positive, negative = model.pair_distances(batch)
    scores = model.score(users)
    torch.testing.assert_close(positive, -scores[[0, 1], [1, 6]])
    torch.testing.assert_close(negative, -scores[[[0], [1]], [[2, 4], [0, 5]]])
    shared = TrainBatch(
        users, torch.tensor([1, 6]), torch.tensor([[2, 4]]).expand(2, 2), shared=True
    )
    torch.testing.assert_close(model.pair_distances(shared)[1], -scores[:, [2, 4]])
    assert "item_biases" not in create_model("cml", 3, 4, dim=2).state_dict()


def test_owned_equals_the_binary_search_membership():
    split = random_split(n_users=80, n_items=30)
    sampler = NegativeSampler(split.train)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        users = torch.randint(split.n_users, (50,), generator=generator)
        items = torch.randint(split.n_items, (40,), generator=generator)  # with repeats
        expected = sampler.contains(users.unsqueeze(1), items.unsqueeze(0))
        assert torch.equal(sampler.owned(users, items), expected)


def test_history_dropout_turns_entries_into_padding_reproducibly():
    from hlrm.training.sampler import drop_history

    items = torch.arange(4000).reshape(100, 40)
    mask = torch.ones(100, 40, dtype=torch.bool)
    mask[:, 30:] = False
    items = items.masked_fill(~mask, 9999)
    dropped = drop_history(History(items, mask), 0.25, 9999, torch.Generator().manual_seed(1))
    again = drop_history(History(items, mask), 0.25, 9999, torch.Generator().manual_seed(1))
    assert torch.equal(dropped.items, again.items) and torch.equal(dropped.mask, again.mask)
    assert not (dropped.mask & ~mask).any()  # padding never comes back
    assert torch.equal(dropped.items == 9999, ~dropped.mask)  # dropped entries are padding
    share = 1 - dropped.mask.sum().item() / mask.sum().item()
    assert 0.2 < share < 0.3
    with pytest.raises(ConfigError, match="history_dropout"):
        TrainConfig(epochs=1, lr=1e-2, history_dropout=1.0).for_model(
            create_model("hlr", 4, 4, dim=2)
        ).validate()


def test_relation_weight_decay_shrinks_the_memory_and_spares_the_tables():
    split = random_split()

    def fit(decay):
        torch.manual_seed(0)
        model = create_model("hlr", split.n_users, split.n_items, dim=8, history_size=5)
        config = TrainConfig(
            epochs=2, batch_size=64, lr=1e-2, device="cpu", relation_weight_decay=decay,
            history_dropout=0.2,
        )  # fmt: skip
        Trainer(model, split, config.for_model(model), progress=False).fit()
        return model

    plain, decayed = fit(0.0), fit(10.0)
    assert decayed.lram.memory.norm() < plain.lram.memory.norm()
    config = TrainConfig(epochs=1, lr=1e-2, relation_weight_decay=1.0).for_model(decayed)
    optimizer = Trainer(decayed, split, config, progress=False).optimizer
    groups = [len(group["params"]) for group in optimizer.param_groups]
    assert groups == [2, len(list(decayed.parameters())) - 2]
