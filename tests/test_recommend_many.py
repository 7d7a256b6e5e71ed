"""Batched recommendations and similar items (hlrm.runs), on a small in-memory split and
untrained models: the guarantees hold for any weights, so no training is needed."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hlrm.config import RunConfig
from hlrm.data.matrix import SplitData, binary_csr
from hlrm.errors import ConfigError, UnknownIdError
from hlrm.models.base import create_model
from hlrm.runs import Run, recommend, recommend_many, similar_items
from hlrm.training.history import HistorySampler, keyed_uniform

N_USERS, N_ITEMS = 48, 30
SMALL = {
    "cml": {"dim": 8},
    "bpr": {"dim": 8},
    "lrml": {"dim": 8, "n_slots": 4},
    "hlr": {"dim": 8, "n_slots": 4, "history_size": 6},
    "hlr++": {"dim": 8, "n_slots": 4, "history_size": 6, "padding_quirk": True},
    "adacml": {"dim": 8, "history_size": 6},
    "transcf": {"dim": 8},
    "itemknn": {"neighbors": 10},
    "ease": {"l2": 10.0},
    "als": {"dim": 8, "iterations": 2},
    "popularity": {},
}


def small_split() -> SplitData:
    rng = np.random.default_rng(0)
    users, items, parts = [], [], []
    for user in range(N_USERS):
        chosen = rng.choice(N_ITEMS, size=rng.integers(4, 14), replace=False)
        users += [user] * len(chosen)
        items += chosen.tolist()
        parts += rng.choice(3, size=len(chosen), p=[0.6, 0.2, 0.2]).tolist()
        parts[-1] = 2  # every user has a test item
    users, items, parts = map(np.array, (users, items, parts))
    shape = (N_USERS, N_ITEMS)
    matrices = [binary_csr(users[parts == p], items[parts == p], shape) for p in range(3)]
    return SplitData(
        *matrices,
        user_ids=np.array([f"u{i}" for i in range(N_USERS)]),
        item_ids=np.array([f"item-{i}" for i in range(N_ITEMS)]),
        item_titles=np.array([f"Title {i}" for i in range(N_ITEMS)]),
    )


def small_run(name: str) -> Run:
    torch.manual_seed(1)
    split = small_split()
    model = create_model(name, split.n_users, split.n_items, **SMALL[name])
    model.prepare(split.train)
    model.eval()
    return Run(RunConfig(), split, model)


@pytest.fixture(scope="module", params=sorted(SMALL))
def run(request) -> Run:
    return small_run(request.param)


def test_never_recommends_anything_the_user_has(run):
    lists = recommend_many(run, list(run.split.user_ids), k=N_ITEMS)
    everything = run.split.everything
    for user, recs in enumerate(lists):
        had = set(everything[user].indices)
        assert had & set(run.split.test[user].indices)  # test items are masked too
        assert not had & {r.item for r in recs}
        assert len(recs) == N_ITEMS - len(had)  # every other item, once
        assert [r.rank for r in recs] == list(range(1, len(recs) + 1))
        scores = [r.score for r in recs]
        assert scores == sorted(scores, reverse=True)
        assert all(r.item_id == f"item-{r.item}" and r.title == f"Title {r.item}" for r in recs)


def test_batched_lists_equal_one_by_one(run):
    users = list(run.split.user_ids[::-1])  # any order; returned in the order given
    batched = recommend_many(run, users, k=5)
    for user, recs in zip(users, batched, strict=True):
        alone = recommend_many(run, [user], k=5)[0]
        assert [r.item_id for r in recs] == [r.item_id for r in alone]
        np.testing.assert_allclose([r.score for r in recs], [r.score for r in alone], rtol=1e-5)
        assert [r.item_id for r in recommend(run, user=user, k=5)] == [r.item_id for r in recs]


def test_filter_seen_false_ranks_every_item(run):
    recs = recommend_many(run, ["u0"], k=N_ITEMS, filter_seen=False)[0]
    assert sorted(r.item for r in recs) == list(range(N_ITEMS))


def test_similar_items_exclude_the_query(run):
    if run.model.name == "popularity":
        with pytest.raises(ConfigError, match="no item-item similarity"):
            similar_items(run, ["item-0"])
        return
    queries = [f"item-{i}" for i in range(N_ITEMS)]
    lists = similar_items(run, queries, k=5)
    assert len(lists) == N_ITEMS
    for query, recs in zip(queries, lists, strict=True):
        assert query not in {r.item_id for r in recs}
        assert 0 < len(recs) <= 5
        scores = [r.score for r in recs]
        assert scores == sorted(scores, reverse=True)
    single = similar_items(run, ["item-7"], k=5)[0]
    assert [r.item_id for r in single] == [r.item_id for r in lists[7]]


def test_similar_items_follow_each_models_geometry():
    cml = small_run("cml")
    embeddings = cml.model.item_embeddings.detach()
    distances = ((embeddings - embeddings[3]) ** 2).sum(1)
    distances[3] = np.inf
    nearest = [f"item-{i}" for i in torch.argsort(distances)[:4].tolist()]
    assert [r.item_id for r in similar_items(cml, ["item-3"], k=4)[0]] == nearest
    ease = small_run("ease")
    row = ease.model.weights[3].clone()
    row[3] = -np.inf
    expected = [f"item-{i}" for i in torch.argsort(row, descending=True, stable=True)[:4].tolist()]
    assert [r.item_id for r in similar_items(ease, ["item-3"], k=4)[0]] == expected


def test_unknown_ids_are_named():
    run = small_run("cml")
    with pytest.raises(UnknownIdError, match="unknown user ids 'nobody', 'ghost'") as error:
        recommend_many(run, ["u1", "nobody", "ghost"])
    assert error.value.kind == "user" and error.value.ids == ["nobody", "ghost"]
    with pytest.raises(UnknownIdError, match="unknown item id 'nothing'"):
        similar_items(run, ["nothing"])
    with pytest.raises(UnknownIdError, match="unknown user id 'x'"):
        recommend(run, user="x")
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        recommend_many(run, ["u1"], k=0)


def test_new_user_fold_in_masks_the_given_items():
    run = small_run("hlr")
    given = ["item-1", "item-2", "item-3"]
    recs = recommend(run, items=given, k=N_ITEMS)
    assert len(recs) == N_ITEMS - 3 and not {r.item_id for r in recs} & set(given)


@pytest.mark.parametrize("mode", ["random", "unpop"])
def test_keyed_pools_do_not_depend_on_the_batch(mode):
    matrix = sp.random(40, 50, density=0.4, format="csr", random_state=0)
    sampler = HistorySampler(matrix, 5, mode, keyed_seed=7)
    together = sampler.sample(torch.arange(40))
    for user in (0, 13, 39):
        alone = sampler.sample(torch.tensor([user]))
        assert torch.equal(alone.items[0], together.items[user])
        assert alone.items.shape == (1, 5)  # padded to the full size
    other_seed = HistorySampler(matrix, 5, mode, keyed_seed=8).sample(torch.arange(40))
    assert not torch.equal(other_seed.items, together.items)


def test_keyed_uniform_is_uniform_and_deterministic():
    keys = torch.arange(100_000)
    values = keyed_uniform(3, keys, torch.tensor(5))
    assert torch.equal(values, keyed_uniform(3, keys, torch.tensor(5)))
    assert values.min() >= 0 and values.max() < 1
    counts = torch.histc(values, bins=10, min=0, max=1)
    assert (counts - 10_000).abs().max() < 500
