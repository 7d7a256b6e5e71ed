"""Batched recommendations and similar items (hlrm.runs), on a small in-memory split and
untrained models: the guarantees hold for any weights, so no training is needed."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hlrm.config import RunConfig
from hlrm.data.matrix import SplitData, binary_csr
from hlrm.errors import ConfigError, UnknownIdError
from hlrm.models.base import History, create_model
from hlrm.runs import Run, recommend, recommend_many, recommend_table, similar_items
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


def test_table_matches_the_lists(run):
    users = ["u5", "u0", "u7"]
    table = recommend_table(run, users, k=4)
    lists = recommend_many(run, users, k=4)
    pairs = zip(users, lists, strict=True)
    expected = [(user, r.rank, r.item_id, r.score) for user, recs in pairs for r in recs]
    got = list(table[["user_id", "rank", "item_id", "score"]].itertuples(index=False, name=None))
    assert [row[:3] for row in got] == [row[:3] for row in expected]
    np.testing.assert_allclose([row[3] for row in got], [row[3] for row in expected], rtol=1e-6)
    assert list(table.columns) == ["user_id", "rank", "item_id", "score", "title"]
    every = recommend_table(run, None, k=2)
    assert list(every["user_id"].unique()) == list(run.split.user_ids)


@pytest.mark.parametrize("name", ["hlr", "hlr++", "adacml"])
def test_effects_are_the_score_drop_without_each_history_item(name):
    run = small_run(name)
    model, user = run.model, 5
    recs = recommend_many(run, ["u5"], k=3, explain=True)[0]
    sampler = HistorySampler(
        run.split.everything, model.history_size, model.history_sampling, keyed_seed=2021
    )
    pool = sampler.sample(torch.tensor([user]))
    targets = torch.tensor([r.item for r in recs])
    explanations = model.explain(user, targets, pool)
    valid = pool.items[0][pool.mask[0]].tolist()
    with torch.no_grad():
        full = model.score(torch.tensor([user]), pool)[0, targets]
        for slot, item in enumerate(pool.items[0].tolist()):
            if item == model.n_items:
                continue
            items, mask = pool.items.clone(), pool.mask.clone()
            items[0, slot], mask[0, slot] = model.n_items, False  # the slot becomes padding
            without = model.score(torch.tensor([user]), History(items, mask))[0, targets]
            for explanation, before, after in zip(explanations, full, without, strict=True):
                assert explanation.effects[item] == pytest.approx(float(before - after), abs=1e-5)
    for rec, explanation in zip(recs, explanations, strict=True):
        assert set(explanation.effects) == set(valid)
        rows = rec.explanation["history_effect"]
        assert [row["effect"] for row in rows] == sorted(
            (row["effect"] for row in rows), reverse=True
        )
        total = sum(abs(value) for value in explanation.effects.values())
        for row in rows:
            index = run.split.items.index(row["item_id"])
            assert row["share"] == pytest.approx(explanation.effects[index] / total)
        for module, entries in rec.explanation.items():
            if module.endswith("attention"):
                n = len(explanation.attention[module])
                assert all(entry["uniform"] == pytest.approx(1 / n) for entry in entries)


def test_lrml_explains_with_the_users_items_of_closest_relation():
    run = small_run("lrml")
    model, user = run.model, 9
    recs = recommend_many(run, ["u9"], k=2, explain=True)[0]
    owned = run.split.everything[user].indices
    for rec in recs:
        related = rec.explanation["related"]
        assert "memory" not in rec.explanation
        assert {row["item_id"] for row in related} <= {f"item-{i}" for i in owned}
        with torch.no_grad():
            vector = model.user_embeddings[user]
            target = model.lram.relation(vector, model.item_embeddings[rec.item])
            others = model.lram.relation(vector, model.item_embeddings[torch.from_numpy(owned)])
            cosine = torch.nn.functional.cosine_similarity(others, target.unsqueeze(0), dim=1)
        best = owned[int(cosine.argmax())]
        assert related[0]["item_id"] == f"item-{best}"
        assert related[0]["similarity"] == pytest.approx(float(cosine.max()), abs=1e-5)


def test_explain_text_prints_four_significant_digits_and_the_uniform_weight():
    from hlrm.cli import explain_text

    text = explain_text(
        {
            "user_attention": [
                {"item_id": "7", "title": "Seven", "weight": 0.0212345, "uniform": 0.02},
                {"slot": "user", "weight": 0.0199, "uniform": 0.02},
            ],
            "history_effect": [{"item_id": "7", "title": None, "effect": 0.012345, "share": 0.3}],
            "related": [{"item_id": "9", "title": "Nine", "similarity": 0.987654}],
        }
    )
    assert text.splitlines() == [
        "user attention (uniform 0.02): Seven 0.02123; (user) 0.0199",
        "history effect (score change without it): 7 +0.01235 (30.0%)",
        "related: Nine cos 0.9877",
    ]


def test_a_run_builds_its_deployed_pools_once_per_seed():
    """A server calls recommend_many per request: the sampler over every interaction is kept on
    the run (per seed), and the lists are those of a freshly built one."""
    run = small_run("hlr")
    first = recommend_many(run, ["u3", "u7"], k=5)
    sampler = run._samplers[run.config.seed]
    assert recommend_many(run, ["u3", "u7"], k=5) == first
    assert run._samplers[run.config.seed] is sampler
    other = recommend_many(run, ["u3"], k=5, seed=run.config.seed + 1)
    assert len(run._samplers) == 2 and len(other[0]) == 5
    recommend(run, items=["item-1", "item-2"], k=5)  # a fold-in: its own model, not cached
    assert len(run._samplers) == 2
