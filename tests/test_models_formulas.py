"""Each model's distance against a per-row loop written from the spec (3.2-3.6), the parity quirks,
TransCF's neighbourhoods and regularisers, explanations and the registry entries."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hlrm.errors import ConfigError
from hlrm.models import History, TrainBatch, create_model, model_parameters
from hlrm.models.hlr import HLR, HLRPlusPlus
from hlrm.training.losses import HingeObjective

N_USERS, N_ITEMS, DIM, SLOTS, P = 5, 20, 6, 4, 5
COUNTS = [0, 2, P, 1, P]


def build(name, **options):
    torch.manual_seed(0)
    model = create_model(name, N_USERS, N_ITEMS, dim=DIM, **options).double()
    model.prepare(train_matrix())
    return model


def train_matrix() -> sp.csr_matrix:
    rng = np.random.default_rng(3)
    dense = rng.random((N_USERS, N_ITEMS)) < 0.3
    dense[:, 1] = True
    dense[:, 0] = False  # an item nobody interacted with
    return sp.csr_matrix(dense.astype(np.float32))


def batch(seed=4, counts=COUNTS, width=P) -> TrainBatch:
    generator = torch.Generator().manual_seed(seed)
    users = torch.arange(len(counts))
    positives = torch.randint(N_ITEMS, (len(counts),), generator=generator)
    negatives = torch.randint(N_ITEMS, (len(counts), 1), generator=generator)
    items = torch.stack([torch.randperm(N_ITEMS, generator=generator)[:width] for _ in counts])
    mask = torch.arange(width) < torch.tensor(counts).unsqueeze(1)
    return TrainBatch(users, positives, negatives, History(items.masked_fill(~mask, N_ITEMS), mask))


def lram(model, a, b):
    return torch.softmax((a * b) @ model.lram.keys, -1) @ model.lram.memory


def attention_mix(vectors, logits, beta=1.0):
    weights = torch.exp(logits) / torch.exp(logits).sum() ** beta
    return (weights.unsqueeze(1) * vectors).sum(0) if len(vectors) else torch.zeros(DIM)


def naive_distances(model, data: TrainBatch, quirk=False):
    """Distances (B, 1 + k) from the spec's per-row formulas, one row and one target at a time."""
    out = torch.zeros(len(data.users), 1 + data.negatives.shape[1], dtype=torch.float64)
    for row in range(len(data.users)):
        u = model.user_embeddings[data.users[row]]
        real = data.history.items[row][data.history.mask[row]]
        x = model.item_embeddings[real]
        padded = len(real) < data.history.items.shape[1]
        x_quirk = torch.cat([x, torch.zeros(1, DIM)]) if quirk and padded else x
        targets = torch.cat([data.positives[row : row + 1], data.negatives[row]])
        for column, target in enumerate(targets.tolist()):
            t = model.item_embeddings[target]
            if model.name == "lrml":
                translation = lram(model, u, t)
            elif model.name == "hlr":
                pool = torch.cat([u.unsqueeze(0), x])
                relations = torch.stack([lram(model, t, z) for z in pool])
                translation = attention_mix(relations, relations @ u, model.beta)
            elif model.name == "hlr++":
                item_pool = torch.cat([t.unsqueeze(0), x])
                item_relations = torch.stack([lram(model, u, y) for y in item_pool])
                user_relations = lram(model, t, x_quirk)
                translation = attention_mix(item_relations, item_relations @ t) + attention_mix(
                    user_relations, user_relations @ u
                )
            elif model.name == "adacml":
                translation = attention_mix(x_quirk, x_quirk @ t, model.beta)
            out[row, column] = (u + translation - t).pow(2).sum()
    return out


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("lrml", {"n_slots": SLOTS}),
        ("hlr", {"n_slots": SLOTS, "history_size": P}),
        ("hlr", {"n_slots": SLOTS, "history_size": P, "beta": 2.0}),
        ("hlr++", {"n_slots": SLOTS, "history_size": P}),
        ("hlr++", {"n_slots": SLOTS, "history_size": P, "padding_quirk": True}),
        ("adacml", {"history_size": P}),
        ("adacml", {"history_size": P, "padding_quirk": True}),
    ],
)
def test_training_distances_follow_the_spec_formulas(name, options):
    model = build(name, **options)
    data = batch()
    with torch.no_grad():
        positive, negative = model.pair_distances(data)
        expected = naive_distances(model, data, quirk=options.get("padding_quirk", False))
    torch.testing.assert_close(torch.cat([positive.unsqueeze(1), negative], 1), expected)


@pytest.mark.parametrize("distance", ["l2", "l1"])
def test_lrml_tay_distances(distance):
    model = build("lrml", distance=distance)
    data = batch()
    squared = build("lrml")
    with torch.no_grad():
        u, t = model.user_embeddings[data.users], model.item_embeddings[data.positives]
        difference = u + lram(model, u, t) - t
        expected = (
            (difference.pow(2).sum(-1) + 1e-3).sqrt()
            if distance == "l2"
            else difference.abs().sum(-1)
        )
        torch.testing.assert_close(model.pair_distances(data)[0], expected)
        torch.testing.assert_close(squared.pair_distances(data)[0], difference.pow(2).sum(-1))


@pytest.mark.parametrize("name", ["hlr++", "adacml"])
def test_padding_quirk_differs_exactly_on_pools_that_are_not_full(name):
    clean, quirk = build(name, history_size=P), build(name, history_size=P, padding_quirk=True)
    data = batch()
    full = torch.tensor(COUNTS) == P
    if name == "adacml":  # an admitted zero vector alone changes nothing: a = 1 on x = 0
        full |= torch.tensor(COUNTS) == 0
    with torch.no_grad():
        difference = (clean.pair_distances(data)[0] - quirk.pair_distances(data)[0]).abs()
        assert torch.all(difference[full] < 1e-12) and torch.all(difference[~full] > 1e-8)
        scores_clean = clean.score(data.users, data.history)
        scores_quirk = quirk.score(data.users, data.history)
    score_difference = (scores_clean - scores_quirk).abs().amax(1)
    if name == "adacml":  # official AdaCML scores with exact masks: the quirk is training-only
        assert torch.all(score_difference == 0)
    else:  # official HLR++ keeps the "+1" slot (relation = mean of M) when scoring too
        assert torch.all(score_difference[full] < 1e-12) and torch.all(score_difference[~full] > 0)
    # the quirk depends on the padded width: a full-width pool admits no padded slot
    tight = batch(counts=[2], width=2)
    with torch.no_grad():
        torch.testing.assert_close(clean.pair_distances(tight), quirk.pair_distances(tight))


def test_hlrpp_quirk_slot_is_the_mean_memory_relation():
    model = build("hlr++", history_size=P, padding_quirk=True)
    data = batch(counts=[0], width=1)  # only the admitted padded slot in the user attention
    with torch.no_grad():
        user = model.user_embeddings[0]
        target = model.item_embeddings[data.positives[0]]
        item_part = lram(model, user, target)  # item attention over [target] alone
        expected = user + item_part + model.lram.memory.mean(0) - target
        torch.testing.assert_close(model.pair_distances(data)[0][0], expected.pow(2).sum())


def test_transcf_neighbourhoods_are_means_refreshed_after_steps():
    model = build("transcf", refresh_every=2)
    train = train_matrix()
    dense = torch.from_numpy(train.toarray()).double()

    def means(table, weights):
        counts = weights.sum(1, keepdim=True)
        return torch.where(counts > 0, weights @ table / counts.clamp_min(1), 0.0)

    def check():
        with torch.no_grad():
            torch.testing.assert_close(
                model.user_neighbourhoods, means(model.item_embeddings, dense)
            )
            torch.testing.assert_close(
                model.item_neighbourhoods, means(model.user_embeddings, dense.T)
            )

    check()
    assert torch.all(model.item_neighbourhoods[0] == 0)  # an item without users
    with torch.no_grad():
        model.item_embeddings.mul_(0.5)
    model.after_step()  # 1 step: stale
    assert not torch.allclose(model.user_neighbourhoods, means(model.item_embeddings, dense))
    model.after_step()  # 2 steps: refreshed
    check()
    with torch.no_grad():
        model.user_embeddings.mul_(0.5)
    model.after_step()
    model.score(torch.arange(N_USERS))  # scoring refreshes stale means first
    check()


def test_transcf_loss_adds_both_regularisers_per_triplet():
    model = build("transcf", alpha_nbr=0.3, alpha_dist=0.7)
    data = batch()
    objective = HingeObjective(margin=0.5, reduction="sum")
    with torch.no_grad():
        u, p = model.user_embeddings[data.users], model.item_embeddings[data.positives]
        n = model.item_embeddings[data.negatives[:, 0]]
        nu_u = model.user_neighbourhoods[data.users]
        nu_p = model.item_neighbourhoods[data.positives]
        nu_n = model.item_neighbourhoods[data.negatives[:, 0]]
        d_p = (u + nu_u * nu_p - p).pow(2).sum(-1)
        d_n = (u + nu_u * nu_n - n).pow(2).sum(-1)
        neighbour = (u - nu_u).pow(2) + (p - nu_p).pow(2) + (n - nu_n).pow(2)
        expected = torch.relu(d_p - d_n + 0.5).sum() + 0.3 * neighbour.sum() + 0.7 * d_p.sum()
        torch.testing.assert_close(model.loss(data, objective), expected)


def test_transcf_needs_prepare_before_training():
    model = create_model("transcf", N_USERS, N_ITEMS, dim=DIM)
    with pytest.raises(RuntimeError, match="prepare"):
        model.loss(batch(), HingeObjective())


def test_hlr_explanations_rank_the_user_attention_over_the_pool():
    model = build("hlr", history_size=P)
    data = batch()
    row = 1  # two history items
    pool = History(data.history.items[row : row + 1], data.history.mask[row : row + 1])
    items = torch.tensor([3, 7, 11])
    explanations = model.explain(row, items, pool)
    assert [e.item for e in explanations] == [3, 7, 11]
    real = data.history.items[row][: COUNTS[row]].tolist()
    for explanation, item in zip(explanations, items.tolist(), strict=True):
        ranking = explanation.attention["user_attention"]
        assert sorted(label for label, _ in ranking if label != "user") == sorted(real)
        assert {label for label, _ in ranking} == {"user", *real}
        weights = [w for _, w in ranking]
        assert weights == sorted(weights, reverse=True) and math.isclose(sum(weights), 1.0)
        with torch.no_grad():
            u, t = model.user_embeddings[row], model.item_embeddings[item]
            relations = torch.stack([lram(model, t, z) for z in [u, *model.item_embeddings[real]]])
            expected = torch.softmax(relations @ u, 0).tolist()
        assert dict(ranking) == pytest.approx(dict(zip(["user", *real], expected, strict=True)))


def test_hlrpp_explanations_cover_both_modules():
    model = build("hlr++", history_size=P, padding_quirk=True)
    data = batch()
    pool = History(data.history.items[1:2], data.history.mask[1:2])
    (explanation,) = model.explain(1, torch.tensor([4]), pool)
    item_labels = [label for label, _ in explanation.attention["item_attention"]]
    user_labels = [label for label, _ in explanation.attention["user_attention"]]
    real = data.history.items[1][: COUNTS[1]].tolist()
    assert sorted(item_labels, key=str) == sorted(["target", *real], key=str)
    assert sorted(user_labels, key=str) == sorted(["padding", *real], key=str)
    for ranking in explanation.attention.values():
        assert math.isclose(sum(w for _, w in ranking), 1.0)


def test_lrml_explains_with_the_owned_items_of_closest_relation():
    model = build("lrml", n_slots=SLOTS)
    owned = torch.tensor([[1, 4, 6, 9]])
    (explanation,) = model.explain(2, torch.tensor([5]), History(owned, torch.ones_like(owned) > 0))
    assert explanation.attention == {} and explanation.effects is None
    labels = [label for label, _ in explanation.related]
    assert sorted(labels) == [1, 4, 6, 9]
    with torch.no_grad():
        u = model.user_embeddings[2]
        target = lram(model, u, model.item_embeddings[5])
        expected = {
            j: float(torch.cosine_similarity(lram(model, u, model.item_embeddings[j]), target, 0))
            for j in labels
        }
    assert dict(explanation.related) == pytest.approx(expected, abs=1e-6)
    similarities = [value for _, value in explanation.related]
    assert similarities == sorted(similarities, reverse=True)
    (alone,) = model.explain(2, torch.tensor([5]))  # without the user's items: nothing related
    assert alone.related == []


def test_registry_names_aliases_and_options():
    assert isinstance(create_model("hlre", 2, 3, dim=4), HLR)
    for alias in ("hlrpp", "jupiter", "jpte", "HLR++"):
        assert isinstance(create_model(alias, 2, 3, dim=4), HLRPlusPlus)
    assert create_model("attcml", 2, 3, dim=4).name == "adacml"
    assert model_parameters("hlr++") == {
        "dim": 100,
        "n_slots": 20,
        "max_norm": 1.0,
        "history_size": 50,
        "history_sampling": "random",
        "copy": False,
        "beta": 1.0,
        "clip": "none",
        "memory_init": "normal",
        "address_scale": 1.0,
        "attention_scale": 1.0,
        "learn_scales": False,
        "padding_quirk": False,
    }
    assert model_parameters("lrml")["distance"] == "squared"
    assert model_parameters("transcf") == {
        "dim": 100,
        "max_norm": 1.0,
        "alpha_nbr": 0.1,
        "alpha_dist": 0.1,
        "refresh_every": 1,
    }
    for name in ("lrml", "hlr", "hlr++", "adacml", "transcf"):
        assert "margin" not in model_parameters(name)
    with pytest.raises(ConfigError):
        create_model("lrml", 2, 3, distance="cosine")
    with pytest.raises(ConfigError):
        create_model("hlr", 2, 3, clip="keys")


def test_projection_moves_only_rows_outside_the_ball_onto_its_surface():
    from hlrm.models.base import project_rows_

    torch.manual_seed(0)
    table = torch.randn(50, 6)
    table[0] = 0.0  # a zero row stays zero
    table[1] = table[1] / table[1].norm() * 0.75  # inside: untouched, bit for bit
    table[2] = table[2] / table[2].norm()  # on the surface
    before = table.clone()
    norms = before.norm(dim=1)
    project_rows_(table, 0.75)
    inside = norms <= 0.75
    assert torch.equal(table[inside], before[inside])
    torch.testing.assert_close(table[~inside].norm(dim=1), torch.full(((~inside).sum(),), 0.75))
    torch.testing.assert_close(  # same direction
        table[~inside], before[~inside] * (0.75 / norms[~inside]).unsqueeze(1)
    )
    keys = torch.randn(6, 9)
    project_rows_(keys.T, 1.0)  # a transposed view is projected in place (memory keys)
    torch.testing.assert_close(keys.norm(dim=0).clamp(min=1.0), torch.ones(9))
