"""Baselines outside metric learning: BPR-MF, MF-ALS (implicit), item-kNN and EASE^R."""

import io
import math
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hlrm.data.matrix import SplitData, binary_csr
from hlrm.errors import ConfigError
from hlrm.evaluation.protocol import evaluate
from hlrm.models import create_model, model_parameters
from hlrm.models import neighbors as neighbors_module
from hlrm.models.base import TrainBatch
from hlrm.training.foldin import fold_in_user
from hlrm.training.losses import HingeObjective
from hlrm.training.trainer import TrainConfig, Trainer

N_USERS, N_ITEMS = 100, 25
FITTED_MODELS = {
    "itemknn": {"neighbors": 5, "shrink": 1.5},
    "ease": {"l2": 5.0},
    "als": {"dim": 4, "regularization": 0.1, "iterations": 5},
}


def random_train(seed: int = 5) -> sp.csr_matrix:
    """Binary (100, 25) data; seed 5 has no similarity ties at item-kNN's cut in the tests below."""
    n_users, n_items, density = N_USERS, N_ITEMS, 0.3
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    return binary_csr(users, items, (n_users, n_items))


def random_split(n_users: int = 60, n_items: int = 30, seed: int = 0) -> SplitData:
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.3)
    part = rng.choice(3, size=len(users), p=[0.7, 0.1, 0.2])
    shape = (n_users, n_items)
    mats = [binary_csr(users[part == p], items[part == p], shape) for p in range(3)]
    return SplitData(*mats, user_ids=np.arange(n_users), item_ids=np.arange(n_items))


def all_scores(model, n_users: int) -> torch.Tensor:
    with torch.inference_mode():
        return model.score(torch.arange(n_users))


def fitted(name: str, train: sp.csr_matrix, seed: int = 0, **params):
    if name == "als":
        pytest.importorskip("implicit")
    torch.manual_seed(seed)
    model = create_model(name, *train.shape, **{**FITTED_MODELS.get(name, {}), **params})
    model.prepare(train)
    return model


# ---- BPR ----------------------------------------------------------------------------------------


def tiny_bpr():
    """2 users, 3 items, d = 2, with hand-set weights."""
    model = create_model("bpr", 2, 3, dim=2)
    with torch.no_grad():
        model.user_embeddings.copy_(torch.tensor([[0.5, -1.0], [0.2, 0.3]]))
        model.item_embeddings.copy_(torch.tensor([[1.0, 0.0], [-0.5, 0.4], [0.3, 0.9]]))
        model.item_bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    return model


def test_bpr_defaults_are_the_reference_weights():
    params = model_parameters("bpr-mf")
    assert params == {
        "dim": 100,
        "reg_user": 0.0025,
        "reg_item": 0.0025,
        "reg_negative": 0.00025,
        "reg_bias": 0.001,
    }


def test_bpr_loss_is_the_reference_loss_with_one_negative():
    model = tiny_bpr()
    users, positives, negatives = [0, 1], [0, 2], [1, 0]
    e_u = model.user_embeddings.tolist()
    e_i = model.item_embeddings.tolist()
    b = model.item_bias.tolist()

    def x(u: int, i: int) -> float:
        return b[i] + sum(p * q for p, q in zip(e_u[u], e_i[i], strict=True))

    def sq(v: list[float]) -> float:
        return sum(t * t for t in v)

    expected = 0.0
    for u, p, n in zip(users, positives, negatives, strict=True):
        expected += -math.log(1.0 / (1.0 + math.exp(-(x(u, p) - x(u, n)))))
        expected += 0.0025 * sq(e_u[u]) + 0.0025 * sq(e_i[p]) + 0.00025 * sq(e_i[n])
        expected += 0.001 * (b[p] ** 2 + b[n] ** 2)
    batch = TrainBatch(torch.tensor(users), torch.tensor(positives), torch.tensor([[1], [0]]))
    total = model.loss(batch, HingeObjective(reduction="sum"))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    mean = model.loss(batch, HingeObjective(reduction="mean"))
    assert mean.item() == pytest.approx(expected / 2, rel=1e-6)


def test_bpr_shares_the_pair_regulariser_over_its_negatives():
    model = tiny_bpr()
    batch = TrainBatch(torch.tensor([0]), torch.tensor([0]), torch.tensor([[1, 2]]))
    u, p = model.user_embeddings[0], model.item_embeddings[0]
    x_p = model.item_bias[0] + u @ p
    expected = 0.0025 * u.pow(2).sum() + 0.0025 * p.pow(2).sum() + 0.001 * model.item_bias[0] ** 2
    for n in (1, 2):
        x_n = model.item_bias[n] + u @ model.item_embeddings[n]
        expected = expected - torch.log(torch.sigmoid(x_p - x_n))
        expected = expected + 0.00025 * model.item_embeddings[n].pow(2).sum()
        expected = expected + 0.001 * model.item_bias[n] ** 2
    total = model.loss(batch, HingeObjective(reduction="sum"))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bpr_score_is_bias_plus_inner_product():
    model = tiny_bpr()
    expected = model.item_bias + model.user_embeddings @ model.item_embeddings.T
    torch.testing.assert_close(all_scores(model, 2), expected.detach())


def test_bpr_adam_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = create_model("bpr", 20, 15, dim=8)
    gen = torch.Generator().manual_seed(1)
    batch = TrainBatch(
        torch.randint(20, (64,), generator=gen),
        torch.randint(15, (64,), generator=gen),
        torch.randint(15, (64, 3), generator=gen),
    )
    objective = HingeObjective()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(10):
        loss = model.loss(batch, objective)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.after_step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_bpr_trains_and_evaluates_end_to_end():
    split = random_split()
    torch.manual_seed(0)
    model = create_model("bpr", split.n_users, split.n_items, dim=8)
    trainer = Trainer(model, split, TrainConfig(epochs=2, batch_size=64, lr=0.01), progress=False)
    history = trainer.fit()
    assert len(history) == 2 and all(math.isfinite(r.train_loss) for r in history)
    assert 0.0 <= evaluate(model, split).metrics["ndcg@10"] <= 1.0


# ---- item-kNN and EASE --------------------------------------------------------------------------


def brute_force_knn(dense: np.ndarray, neighbors: int, shrink: float) -> np.ndarray:
    """Cosine item-item weights, column j keeping j's ``neighbors`` most similar other items."""
    norms = np.sqrt(dense.sum(axis=0))
    sims = dense.T @ dense / (np.outer(norms, norms) + shrink)
    np.fill_diagonal(sims, 0.0)
    pruned = np.zeros_like(sims)
    for j in range(sims.shape[1]):
        order = np.argsort(-sims[:, j], kind="stable")
        kth, next_ = sims[order[neighbors - 1], j], sims[order[neighbors], j]
        assert kth > next_ + 1e-5 or kth == 0, "(near) tie at the cut: choose other test data"
        keep = order[:neighbors]
        pruned[keep, j] = sims[keep, j]
    return pruned


@pytest.mark.parametrize("shrink", [0.0, 1.5])
def test_itemknn_matches_brute_force(monkeypatch, shrink):
    monkeypatch.setattr(neighbors_module, "BLOCK_ENTRIES", 4 * 25)  # several Gram blocks
    train = random_train()
    model = fitted("itemknn", train, neighbors=5, shrink=shrink)
    dense = train.toarray().astype(np.float64)
    expected = dense @ brute_force_knn(dense, 5, shrink)
    np.testing.assert_allclose(all_scores(model, N_USERS).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert len(model.neighbour_indices) <= 25 * 5


def test_itemknn_keeps_every_positive_neighbour_when_allowed_more_than_items():
    train = random_train()
    model = fitted("itemknn", train, neighbors=1000, shrink=0.0)
    dense = train.toarray().astype(np.float64)
    expected = dense @ brute_force_knn(dense, 24, 0.0)
    np.testing.assert_allclose(all_scores(model, N_USERS).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_ease_matches_the_closed_form(monkeypatch):
    monkeypatch.setattr(neighbors_module, "BLOCK_ENTRIES", 3 * 25)  # several blocks everywhere
    train = random_train()
    model = fitted("ease", train, l2=5.0)
    dense = train.toarray().astype(np.float64)
    precision = np.linalg.inv(dense.T @ dense + 5.0 * np.eye(25))
    expected = np.eye(25) - precision / np.diag(precision)
    weights = model.weights.numpy()
    assert np.all(np.diag(weights) == 0.0)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(all_scores(model, N_USERS).numpy(), dense @ expected, atol=1e-5)


def test_ease_refuses_more_items_than_its_limit():
    with pytest.raises(ConfigError, match="max_items"):
        create_model("ease", 10, 20_001)
    with pytest.raises(ConfigError, match="max_items"):
        create_model("ease", 10, 50, max_items=40)
    assert create_model("ease", 10, 50, max_items=50).max_items == 50


def test_neighbourhood_models_score_from_train_rows_only():
    """The stored rows are the training matrix: a user's other splits do not change scores."""
    split = random_split()
    for name in ("itemknn", "ease"):
        model = create_model(name, split.n_users, split.n_items)
        Trainer(model, split, TrainConfig(epochs=1), progress=False).fit()
        rows = model.user_rows(torch.arange(split.n_users), torch.float32)
        np.testing.assert_array_equal(rows.numpy(), split.train.toarray())
        assert 0.0 <= evaluate(model, split).metrics["ndcg@10"] <= 1.0


def test_fold_in_refits_the_neighbourhood_with_the_new_user():
    train = random_train()
    model = fitted("ease", train)
    extended, train_plus = fold_in_user(model, train, np.array([1, 4, 7]))
    assert extended.n_users == N_USERS + 1
    scores = all_scores(extended, N_USERS + 1)
    dense = train_plus.toarray().astype(np.float64)
    precision = np.linalg.inv(dense.T @ dense + 5.0 * np.eye(25))
    expected = dense[-1] @ (np.eye(25) - precision / np.diag(precision))
    np.testing.assert_allclose(scores[-1].numpy(), expected, atol=1e-5)


# ---- ALS ----------------------------------------------------------------------------------------


def test_als_fits_scores_and_is_deterministic_for_a_seed():
    train = random_train()
    first = fitted("als", train, seed=7)
    again = fitted("als", train, seed=7)
    other = fitted("als", train, seed=8)
    scores = all_scores(first, N_USERS)
    assert scores.shape == (N_USERS, N_ITEMS)
    torch.testing.assert_close(first.user_factors @ first.item_factors.T, scores)
    assert torch.equal(first.user_factors, again.user_factors)
    assert torch.equal(first.item_factors, again.item_factors)
    assert not torch.equal(first.item_factors, other.item_factors)
    observed = torch.from_numpy(train.toarray()).bool()
    assert scores[observed].mean() > scores[~observed].mean() + 0.1


def test_als_without_implicit_is_a_config_error(monkeypatch):
    for module in ("implicit", "implicit.cpu", "implicit.cpu.als"):
        monkeypatch.setitem(sys.modules, module, None)
    model = create_model("als", N_USERS, N_ITEMS)
    with pytest.raises(ConfigError, match=r'pip install "hlrm\[als\]"'):
        model.prepare(random_train())


# ---- all four: checkpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bpr", "als", "itemknn", "ease"])
def test_state_dict_round_trip_gives_identical_scores(name):
    train = random_train()
    model = fitted(name, train)
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["state_dict"]
    fresh = create_model(name, *train.shape, **model.hparams)
    fresh.load_state_dict(state)
    expected = all_scores(model, N_USERS)
    assert torch.equal(all_scores(fresh, N_USERS), expected)
    # Re-preparing on the matrix it was fitted on (re-opening a run) keeps the checkpoint's state.
    torch.manual_seed(12345)
    fresh.prepare(train)
    assert torch.equal(all_scores(fresh, N_USERS), expected)


@pytest.mark.parametrize("name", ["als", "itemknn", "ease"])
def test_fitted_models_refuse_to_score_before_prepare(name):
    if name == "als":
        pytest.importorskip("implicit")
    model = create_model(name, N_USERS, N_ITEMS)
    with pytest.raises(RuntimeError, match="prepare"):
        all_scores(model, 3)
