"""Exact pruned top-k of HLR and HLR++ (MemoryTranslationModel.pruned_scores): the lower bounds
hold, pruning skips items, and the lists equal the unpruned path's, with ties and padding."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hlrm.evaluation.ranking import PAD, top_k
from hlrm.models import History, create_model
from hlrm.models.memory import distance_lower_bounds
from hlrm.training.history import HistorySampler
from hlrm.training.losses import HingeObjective
from hlrm.training.sampler import NegativeSampler, PairBatches

N_USERS, N_ITEMS, DIM, SLOTS, P = 30, 80, 8, 5, 6

CONFIGS = [
    ("hlr", {}),
    ("hlr", {"clip": "slots"}),
    ("hlr++", {}),
    ("hlr++", {"padding_quirk": True}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in options.items()) for name, options in CONFIGS]


def interactions(seed: int = 0) -> sp.csr_matrix:
    """Random binary interactions; user 0 has no item (empty pool), user 1 has all but 3."""
    rng = np.random.default_rng(seed)
    dense = rng.random((N_USERS, N_ITEMS)) < 0.15
    dense[0] = False
    dense[1] = True
    dense[1, :3] = False
    return sp.csr_matrix(dense.astype(np.float32))


def build(name, options, dtype=torch.float64, seed=0, train_steps=0):
    torch.manual_seed(seed)
    pool = {"history_size": P} if name != "lrml" else {}
    model = create_model(name, N_USERS, N_ITEMS, dim=DIM, n_slots=SLOTS, **pool, **options).to(
        dtype
    )
    if train_steps:
        train(model, train_steps, seed)
    model.prune_limit = 1.0  # tiny models prune little: never give up, so pruning is exercised
    return model.eval()


def train(model, steps: int, seed: int) -> None:
    """A few Adam steps on toy data: "lightly trained" parameters (grown keys, clustered items)."""
    matrix = interactions(seed)
    batches = PairBatches(
        matrix,
        NegativeSampler(matrix),
        batch_size=64,
        history=HistorySampler(matrix, P),
        seed=seed,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    objective = HingeObjective(margin=0.5)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    done = 0
    while done < steps:
        for batch in batches.epoch(generator):
            loss = model.loss(batch, objective)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            model.after_step()
            done += 1
            if done == steps:
                break


def both_lists(model, k, exclude, block_users=None):
    """(pruned, unpruned) top-k lists of every user, with the same pools."""
    sampler = HistorySampler(exclude, P)
    lists = []
    for prune in (True, False):
        generator = torch.Generator().manual_seed(3)
        lists.append(
            top_k(
                model,
                np.arange(N_USERS),
                exclude,
                k,
                history_sampler=sampler,
                generator=generator,
                block_users=block_users,
                prune=prune,
            )
        )
    return lists


def pools(users, seed=1):
    sampler = HistorySampler(interactions(), P)
    return sampler.sample(users, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("train_steps", [0, 40])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lower_bounds_never_exceed_the_exact_distance(name, options, train_steps, dtype):
    model = build(name, options, dtype, train_steps=train_steps)
    users = torch.arange(N_USERS)
    history = pools(users)
    bounds = model.coefficient_bounds(users, history)
    lower = distance_lower_bounds(model, users, bounds)
    exact = -model.score(users, history)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    assert (lower <= exact + tolerance).all()
    assert (lower >= 0).all()


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("train_steps", [0, 40])
@pytest.mark.parametrize("k", [1, 5, 10, N_ITEMS])
def test_pruned_lists_equal_unpruned_lists(name, options, train_steps, k):
    model = build(name, options, train_steps=train_steps)
    pruned, unpruned = both_lists(model, k, interactions())
    np.testing.assert_array_equal(pruned, unpruned)
    assert (pruned[1, 3:] == PAD).all()  # user 1 can only get its 3 unseen items


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_pruned_lists_do_not_depend_on_blocks_or_groups(name, options):
    model = build(name, options, train_steps=40)
    reference = both_lists(model, 10, interactions())[1]
    model.prune_group = 3
    pruned = both_lists(model, 10, interactions(), block_users=7)[0]
    np.testing.assert_array_equal(pruned, reference)


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_ties_keep_the_lower_index_with_pruning(name, options):
    """Four distinct item vectors repeated: every score is tied 20 times, across the cut-off."""
    model = build(name, options, train_steps=40)
    with torch.no_grad():
        model.item_embeddings.copy_(model.item_embeddings[torch.arange(N_ITEMS) % 4])
    exclude = interactions()
    pruned, unpruned = both_lists(model, 10, exclude)
    np.testing.assert_array_equal(pruned, unpruned)
    users = torch.arange(N_USERS)
    history = HistorySampler(exclude, P).sample(users, generator=torch.Generator().manual_seed(3))
    scores = model.score(users, history)
    for user in range(2, N_USERS):  # users with at least 10 unseen items
        ranked = pruned[user]
        values = scores[user, ranked]
        assert (values[:-1] >= values[1:]).all()
        tied = values[:-1] == values[1:]
        assert (ranked[:-1][tied.numpy()] < ranked[1:][tied.numpy()]).all()


@pytest.mark.parametrize("name", ["hlr", "hlr++"])
def test_pruning_skips_most_items_of_a_large_catalogue(name):
    """At the official d = 100, N = 20 the relations stay near the mean memory slot, so most of
    2000 items are never scored exactly (tiny test models above prune little)."""
    torch.manual_seed(0)
    n_items = 2000
    model = create_model(name, 10, n_items, history_size=10).double().eval()
    users = torch.arange(10)
    items = torch.randint(n_items, (10, 10), generator=torch.Generator().manual_seed(0))
    history = History(items, torch.ones_like(items, dtype=torch.bool))
    excluded = torch.zeros(10, n_items, dtype=torch.bool)
    scores = model.pruned_scores(users, history, excluded, 10)
    kept = torch.isfinite(scores)
    assert kept.double().mean() < 0.5
    exact = model.score(users, history)
    torch.testing.assert_close(scores[kept], exact[kept], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(scores.topk(10).indices, exact.topk(10).indices)


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=IDS)
def test_gives_up_when_too_little_would_be_pruned(name, options):
    model = build(name, options, train_steps=40)
    users = torch.arange(N_USERS)
    excluded = torch.from_numpy(interactions().toarray() > 0)
    model.prune_limit = 0.0
    assert model.pruned_scores(users, pools(users), excluded, 5) is None
    pruned, unpruned = both_lists(model, 5, interactions())
    np.testing.assert_array_equal(pruned, unpruned)


@pytest.mark.parametrize(
    ("name", "options"), [("hlr", {"beta": 0.5}), ("hlr++", {"beta": 2.0}), ("lrml", {})]
)
def test_models_without_bounds_are_scored_in_full(name, options):
    model = build(name, options)
    users = torch.arange(N_USERS)
    history = pools(users) if model.uses_history else None
    excluded = torch.zeros(N_USERS, N_ITEMS, dtype=torch.bool)
    assert model.pruned_scores(users, history, excluded, 5) is None
    pruned, unpruned = both_lists(model, 5, interactions())
    np.testing.assert_array_equal(pruned, unpruned)


SUBSET_CONFIGS = [*CONFIGS, ("lrml", {}), ("lrml", {"distance": "l1"})]


@pytest.mark.parametrize(("name", "options"), SUBSET_CONFIGS)
def test_scoring_an_item_subset_equals_the_full_columns(name, options):
    model = build(name, options, train_steps=0)
    users = torch.arange(N_USERS)
    history = pools(users) if model.uses_history else None
    items = torch.tensor([7, 3, 79, 3, 0])
    model.block_elements = 1  # several item blocks
    subset = model.score(users, history, items=items)
    torch.testing.assert_close(subset, model.score(users, history)[:, items], rtol=0, atol=1e-12)


def test_empty_pools_of_width_zero_prune_exactly():
    model = build("hlr++", {}, train_steps=20)
    users = torch.arange(N_USERS)
    empty = History(torch.empty(N_USERS, 0, dtype=torch.long), torch.empty(N_USERS, 0, dtype=bool))
    excluded = torch.zeros(N_USERS, N_ITEMS, dtype=torch.bool)
    scores = model.pruned_scores(users, empty, excluded, 5)
    exact = model.score(users, empty)
    assert torch.equal(scores.topk(5).indices.sort(1).values, exact.topk(5).indices.sort(1).values)


@pytest.mark.parametrize("variant", ["hlr-ease", "hlr++-ease"])
@pytest.mark.parametrize("blend", [0.7, 5.0])
@pytest.mark.parametrize("train_steps", [0, 40])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_relation_variants_prune_on_their_whole_score(variant, blend, train_steps, k):
    """HLR-EASE and HLR++-EASE add β · x_u B to -distance: the bounds shift by it, the lists
    stay exact."""
    model = build(variant, {"blend": blend}, train_steps=train_steps)
    model.prepare(interactions())
    users = torch.arange(N_USERS)
    offsets = model.score_offsets(users)
    assert offsets is not None and offsets.abs().max() > 0
    pruned, unpruned = both_lists(model, k, interactions())
    np.testing.assert_array_equal(pruned, unpruned)
    history = pools(users)
    excluded = torch.from_numpy(interactions().toarray() > 0)
    scores = model.pruned_scores(users, history, excluded, k)
    kept = torch.isfinite(scores)
    exact = model.score(users, history)
    torch.testing.assert_close(scores[kept], exact[kept], rtol=0, atol=1e-12)
    assert kept.double().mean() < 1.0  # something was pruned
