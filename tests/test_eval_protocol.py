"""The evaluation protocol on tiny hand-built splits and models."""

import numpy as np
import pytest
import torch

from hlrm.data.matrix import SplitData, binary_csr
from hlrm.errors import ConfigError, DataError
from hlrm.evaluation import PAD, evaluate
from hlrm.models import create_model
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


class HistoryRecorder(Recommender):
    """A history-based model that remembers the pool it was given for each user."""

    name = "history-recorder"
    trainable = False
    uses_history = True

    def __init__(self, n_users: int, n_items: int, history_size: int) -> None:
        super().__init__(n_users, n_items)
        self.history_size = history_size
        self.pools: dict[int, list[int]] = {}

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        for user, items, mask in zip(users.tolist(), history.items, history.mask, strict=True):
            self.pools[user] = items[mask].tolist()
        return torch.zeros(len(users), self.n_items)


def split_from_pairs(n_users: int, n_items: int, train, valid, test) -> SplitData:
    """A SplitData from lists of (user, item) pairs per part."""

    def csr(pairs):
        pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        return binary_csr(pairs[:, 0], pairs[:, 1], (n_users, n_items))

    return SplitData(
        csr(train), csr(valid), csr(test), np.arange(100, 100 + n_users), np.arange(n_items)
    )


def random_split(seed: int = 0, n_users: int = 40, n_items: int = 50) -> SplitData:
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.25)
    part = rng.choice(3, size=len(users), p=[0.7, 0.1, 0.2])
    shape = (n_users, n_items)
    train, valid, test = (binary_csr(users[part == p], items[part == p], shape) for p in range(3))
    return SplitData(train, valid, test, np.arange(n_users) * 10, np.arange(n_items))


def known_items(split: SplitData, target: str, user: int) -> set[int]:
    known = split.train_valid if target == "test" else split.train
    return set(known[user].indices.tolist())


@pytest.mark.parametrize("target", ["test", "valid"])
def test_masking_and_list_length(target):
    split = random_split()
    torch.manual_seed(0)
    model = create_model("cml", split.n_users, split.n_items)
    result = evaluate(model, split, ks=(5, 10), target=target)
    truth = split.test if target == "test" else split.valid
    candidates = np.flatnonzero(np.diff(truth.indptr))
    np.testing.assert_array_equal(result.per_user["user"], candidates)
    assert result.recommendations.shape == (len(candidates), 10)
    assert (result.recommendations != PAD).all()
    for row, user in enumerate(candidates):
        assert not known_items(split, target, user) & set(result.recommendations[row].tolist())
    assert result.protocol["masked"] == (["train", "valid"] if target == "test" else ["train"])


@pytest.mark.parametrize("target", ["test", "valid"])
def test_an_oracle_is_perfect_on_its_target(target):
    split = random_split(seed=3)
    truth = split.test if target == "test" else split.valid
    result = evaluate(FixedScores(truth.toarray()), split, ks=(3,), target=target)
    relevant = result.per_user["n_relevant"].to_numpy()
    for metric in ("ndcg@3", "map@3", "hit@3", "mrr@3"):
        assert result.metrics[metric] == pytest.approx(1.0), metric
    np.testing.assert_allclose(result.per_user["recall@3"], np.minimum(relevant, 3) / relevant)


def test_popularity_gives_the_global_ranking_minus_known_items():
    split = random_split(seed=1)
    model = create_model("popularity", split.n_users, split.n_items)
    model.prepare(split.train)
    result = evaluate(model, split, ks=(8,))
    global_order = np.argsort(-split.item_popularity, kind="stable")  # ties: lower index first
    for row, user in enumerate(result.per_user["user"]):
        known = known_items(split, "test", user)
        expected = [i for i in global_order if i not in known][:8]
        assert result.recommendations[row].tolist() == expected


def test_hand_example_with_padding_coverage_and_popularity():
    # Train popularity of items 0..4 is 4, 3, 2, 1, 0; every user's test item is 4.
    train = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0)]
    split = split_from_pairs(4, 5, train, [], [(u, 4) for u in range(4)])
    model = create_model("popularity", 4, 5)
    model.prepare(split.train)
    result = evaluate(model, split, ks=(1, 2))
    np.testing.assert_array_equal(result.recommendations, [[4, PAD], [3, 4], [2, 3], [1, 2]])
    np.testing.assert_array_equal(result.per_user["user_id"], [100, 101, 102, 103])
    assert result.metrics["precision@1"] == pytest.approx(0.25)
    assert result.metrics["precision@2"] == pytest.approx((0.5 + 0.5) / 4)  # padding is a miss
    assert result.metrics["recall@2"] == pytest.approx(0.5)
    assert result.metrics["coverage@1"] == pytest.approx(4 / 5)
    assert result.metrics["popularity@1"] == pytest.approx(1.5)  # median of 0, 1, 2, 3
    assert result.metrics["coverage@2"] == pytest.approx(4 / 5)
    assert "precision@1_std" not in result.metrics


def test_cohorts_average_per_cohort_means():
    # Users 0..6 each have test item 0 and train item 2; users 0-2 rank item 0 first (a hit at 1),
    # the others rank item 1 first.
    split = split_from_pairs(7, 3, [(u, 2) for u in range(7)], [], [(u, 0) for u in range(7)])
    hit = np.array([1, 1, 1, 0, 0, 0, 0], dtype=float)
    scores = np.where(hit[:, None] == 1, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    result = evaluate(FixedScores(scores), split, ks=(1,), cohorts=5, cohort_size=3, seed=11)

    order = np.arange(7)
    np.random.RandomState(11).shuffle(order)
    # 7 users fill two cohorts of 3 and a partial one of 1; that is all there is.
    cohort_means = [hit[order[0:3]].mean(), hit[order[3:6]].mean(), hit[order[6:]].mean()]
    np.testing.assert_array_equal(result.per_user["user"], order)
    np.testing.assert_array_equal(result.per_user["cohort"], [0, 0, 0, 1, 1, 1, 2])
    assert result.protocol["cohorts"] == 3
    assert result.metrics["hit@1"] == pytest.approx(np.mean(cohort_means))
    assert result.metrics["hit@1_std"] == pytest.approx(np.std(cohort_means))
    coverage = [len(set(scores[order[s]].argmax(1))) / 3 for s in (slice(0, 3), slice(3, 6), [6])]
    assert result.metrics["coverage@1"] == pytest.approx(np.mean(coverage))
    assert result.metrics["coverage@1_std"] == pytest.approx(np.std(coverage))


def test_max_users_is_a_deterministic_sample():
    split = random_split(seed=2)
    model = create_model("popularity", split.n_users, split.n_items)
    model.prepare(split.train)
    first = evaluate(model, split, max_users=10, seed=5)
    again = evaluate(model, split, max_users=10, seed=5)
    other = evaluate(model, split, max_users=10, seed=6)
    users = first.per_user["user"].to_numpy()
    assert len(users) == 10 and (np.diff(users) > 0).all()
    assert set(users) <= set(np.flatnonzero(np.diff(split.test.indptr)))
    np.testing.assert_array_equal(users, again.per_user["user"])
    assert first.metrics == again.metrics
    assert not np.array_equal(users, other.per_user["user"])
    assert first.protocol["selection"] == "sample"
    everyone = evaluate(model, split, max_users=10_000)
    assert everyone.protocol["selection"] == "all"


@pytest.mark.parametrize("target", ["test", "valid"])
def test_history_pools_come_from_the_known_items(target):
    split = random_split(seed=4)
    model = HistoryRecorder(split.n_users, split.n_items, history_size=1000)
    evaluate(model, split, target=target)
    assert model.pools
    for user, pool in model.pools.items():
        assert sorted(pool) == sorted(known_items(split, target, user))


def test_history_sampling_is_seeded():
    split = random_split(seed=4)
    pools = []
    for _ in range(2):
        model = HistoryRecorder(split.n_users, split.n_items, history_size=3)
        evaluate(model, split, seed=9)
        pools.append(model.pools)
    assert pools[0] == pools[1]


def test_empty_target_is_a_data_error():
    split = split_from_pairs(2, 3, [(0, 0), (1, 1)], [], [(0, 2)])
    with pytest.raises(DataError, match="valid split is empty"):
        evaluate(FixedScores(np.zeros((2, 3))), split, target="valid")


@pytest.mark.parametrize(
    "options",
    [{"target": "train"}, {"ks": [0]}, {"ks": []}, {"cohorts": 2, "max_users": 5}, {"cohorts": 0}],
)
def test_bad_options_are_config_errors(options):
    split = split_from_pairs(2, 3, [(0, 0), (1, 1)], [], [(0, 2)])
    with pytest.raises(ConfigError):
        evaluate(FixedScores(np.zeros((2, 3))), split, **options)
