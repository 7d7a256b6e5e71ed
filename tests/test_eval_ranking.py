"""Exact top-k: equals a brute-force numpy ranking, masks, pads, breaks ties by item index."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hlrm.errors import HlrmError
from hlrm.evaluation.ranking import PAD, top_k
from hlrm.models.base import History, Recommender


class FixedScores(Recommender):
    """Scores read from a fixed (n_users, n_items) matrix."""

    name = "fixed"
    trainable = False

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__(*scores.shape)
        self.register_buffer("table", torch.as_tensor(scores, dtype=torch.float32))

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        return self.table[users]


def brute_force(scores: np.ndarray, exclude: sp.csr_matrix, users, k: int) -> np.ndarray:
    """Per user: stable argsort of the negated masked scores, -inf positions become PAD."""
    out = np.full((len(users), k), PAD)
    for row, u in enumerate(users):
        s = scores[u].astype(np.float32)
        s[exclude[u].indices] = -np.inf
        order = np.argsort(-s, kind="stable")[:k]
        order[np.isneginf(s[order])] = PAD
        out[row, : len(order)] = order
    return out


def random_exclude(rng, n_users, n_items, density) -> sp.csr_matrix:
    return sp.random(n_users, n_items, density=density, format="csr", random_state=rng)


@pytest.mark.parametrize("block_users", [None, 1, 7])
def test_matches_brute_force(block_users):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 60))
    exclude = random_exclude(rng, 40, 60, 0.3)
    users = rng.permutation(40)[:25]
    got = top_k(FixedScores(scores), users, exclude, 10, block_users=block_users)
    np.testing.assert_array_equal(got, brute_force(scores, exclude, users, 10))


def test_ties_go_to_the_lower_item_index():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, size=(30, 50)).astype(float)  # massive ties, across the cut-off
    exclude = random_exclude(rng, 30, 50, 0.2)
    users = np.arange(30)
    got = top_k(FixedScores(scores), users, exclude, 12, block_users=8)
    np.testing.assert_array_equal(got, brute_force(scores, exclude, users, 12))


def test_short_lists_are_padded():
    scores = np.arange(5.0)[None, :].repeat(2, axis=0)
    exclude = sp.csr_matrix(np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    got = top_k(FixedScores(scores), np.array([0, 1]), exclude, 7)
    np.testing.assert_array_equal(got, [[4, 2, PAD, PAD, PAD, PAD, PAD], [4, 3, 2, 1, 0, PAD, PAD]])


def test_restores_training_mode_and_leaves_model_untouched():
    scores = np.arange(6.0)[None, :].repeat(3, axis=0)
    model = FixedScores(scores)
    model.train()
    exclude = sp.csr_matrix(np.eye(3, 6, dtype=np.float32))
    top_k(model, np.arange(3), exclude, 2)
    assert model.training
    np.testing.assert_array_equal(model.table.numpy(), scores)  # masking wrote into a copy


def test_nan_scores_raise():
    scores = np.zeros((2, 4))
    scores[1, 2] = np.nan
    with pytest.raises(HlrmError, match="NaN"):
        top_k(FixedScores(scores), np.arange(2), sp.csr_matrix((2, 4)), 2)


def test_history_models_need_a_sampler():
    model = FixedScores(np.zeros((2, 4)))
    model.uses_history = True
    with pytest.raises(ValueError, match="history_sampler"):
        top_k(model, np.arange(2), sp.csr_matrix((2, 4)), 2)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("hlr", {"n_slots": 4, "history_size": 30}),
        ("hlr++", {"n_slots": 4, "history_size": 30}),
        ("adacml", {"history_size": 30}),
        ("lrml", {"n_slots": 4}),
    ],
)
def test_scorers_with_per_user_intermediates_cap_the_user_block(name, options, monkeypatch):
    """The factorised scorers hold per-user matrices (d·(1+P)·N floats for HLR) whatever their
    item block, so the default user block shrinks to the model's cap; the lists do not change.
    P = 30 >= every user's history: the pools are whole histories, the same in any block."""
    from hlrm.models.base import create_model
    from hlrm.training.history import HistorySampler

    torch.manual_seed(0)
    train = random_exclude(np.random.default_rng(0), 50, 30, 0.2)
    model = create_model(name, 50, 30, dim=8, **options).eval()
    sampler = HistorySampler(train, options.get("history_size", 0))
    calls = []
    score = model.score
    monkeypatch.setattr(
        model, "score", lambda users, *rest: calls.append(len(users)) or score(users, *rest)
    )

    def ranked(block_users=None):
        return top_k(
            model,
            np.arange(50),
            train,
            5,
            history_sampler=sampler,
            block_users=block_users,
            prune=False,
        )

    one_by_one = ranked(block_users=1)
    calls.clear()
    model.block_elements = 7 * model.user_elements()
    assert model.max_block_users() == 7
    np.testing.assert_array_equal(ranked(), one_by_one)
    assert max(calls) == 7


def test_a_memory_budget_changes_blocks_never_lists(monkeypatch):
    from hlrm.models.base import create_model

    torch.manual_seed(0)
    exclude = random_exclude(np.random.default_rng(0), 40, 30, 0.2)
    model = create_model("lrml", 40, 30, dim=8, n_slots=4)
    calls = []
    score = model.score
    monkeypatch.setattr(
        model, "score", lambda users, *rest: calls.append(len(users)) or score(users, *rest)
    )
    default = top_k(model, np.arange(40), exclude, 5, prune=False)
    assert calls == [40]
    calls.clear()
    tiny = 8 * 4 * 4 * 5 / 2**20  # five users' d·N pool matrices, in MiB
    np.testing.assert_array_equal(top_k(model, np.arange(40), exclude, 5, memory_mib=tiny), default)
    assert max(calls) == 5 and model.block_elements == 2**21  # restored
    with pytest.raises(ValueError, match="memory budget"):
        top_k(model, np.arange(40), exclude, 5, memory_mib=0)
