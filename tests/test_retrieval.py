"""Two-stage retrieval: HNSW candidates by the CML distance, exact re-ranking."""

import json
import sys

import numpy as np
import pytest
import torch

from hlrm.errors import ConfigError
from hlrm.evaluation.ranking import top_k
from hlrm.retrieval import AnnIndex, supports_ann
from hlrm.training.history import HistorySampler
from serve_helpers import random_run

pytest.importorskip("faiss")


def test_cml_scores_a_subset_of_items():
    run = random_run("cml", dim=8, item_bias=True)
    with torch.no_grad():
        run.model.item_biases.normal_()
    users, items = torch.arange(7), torch.tensor([5, 3, 900, 3])
    with torch.no_grad():
        full = run.model.score(users)
        subset = run.model.score(users, items=items)
    torch.testing.assert_close(subset, full[:, items])


@pytest.mark.parametrize(
    "name, params",
    [
        ("cml", {"item_bias": True}),
        ("lrml", {}),
        ("hlr", {"history_size": 6}),
        ("hlr++", {"history_size": 6}),
        ("transcf", {}),
        ("adacml", {"history_size": 6}),
    ],
)
def test_all_items_as_candidates_give_the_exact_lists(name, params):
    """The re-ranking stage alone: with every item a candidate the lists are the exact ones
    (same scores, same masking of known items, same tie rule)."""
    run = random_run(name, dim=8, **params)
    model, known = run.model, run.split.everything
    if name == "cml":
        with torch.no_grad():
            model.item_biases.normal_()
    index = AnnIndex.build(model, candidates=model.n_items)
    users = np.arange(0, 40, 3)
    sampler = None
    if model.uses_history:
        sampler = HistorySampler(known, model.history_size, model.history_sampling, "cpu")
    exact = top_k(
        model, users, known, 10, history_sampler=sampler, generator=torch.Generator().manual_seed(1)
    )
    items, scores = index.top_k_scored(
        model, users, known, 10, history_sampler=sampler, generator=torch.Generator().manual_seed(1)
    )
    np.testing.assert_array_equal(items, exact)
    assert np.all(scores[:, :-1] >= scores[:, 1:])


def test_the_graph_finds_the_nearest_items_by_the_biased_cml_distance():
    run = random_run("cml", dim=8, item_bias=True)
    model = run.model
    with torch.no_grad():
        model.item_biases.normal_()
        exact = torch.topk(model.score(torch.arange(20)), 15).indices.numpy()
    index = AnnIndex.build(model, candidates=15, search_width=400)
    found = index.search(model.user_embeddings[:20].detach().numpy(), 15)
    np.testing.assert_array_equal(found, exact)


def test_candidates_skip_known_items_and_lists_are_sorted():
    run = random_run("hlr", dim=8, history_size=6)
    model, known = run.model, run.split.everything
    index = AnnIndex.build(model, candidates=30)
    sampler = HistorySampler(known, model.history_size, model.history_sampling, "cpu")
    items, scores = index.top_k_scored(model, np.arange(25), known, 10, history_sampler=sampler)
    for row in range(25):
        assert not set(items[row].tolist()) & set(known[row].indices.tolist())
        assert len(set(items[row].tolist())) == 10
    assert np.all(scores[:, :-1] >= scores[:, 1:])


def test_refusals(monkeypatch):
    for name in ("popularity", "bpr"):
        model = random_run(name).model
        assert not supports_ann(model)
        with pytest.raises(ConfigError, match="--ann needs"):
            AnnIndex.build(model)
    model = random_run("cml", dim=8).model
    with pytest.raises(ConfigError, match="positive"):
        AnnIndex.build(model, candidates=0)
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ConfigError, match=r"hlrm\[ann\]"):
        AnnIndex.build(model)


def test_recommend_command_with_ann(tmp_path, monkeypatch, capsys):
    from cli_helpers import run_cli
    from serve_helpers import trained_run_dir

    run_dir = str(trained_run_dir(tmp_path / "cml", "cml", dim=8))
    code, exact, _ = run_cli(monkeypatch, capsys, "recommend", run_dir, "--user", "5", "--json")
    assert code == 0
    every_item = ["--ann", "--ann-candidates", "1000"]  # the synthetic data has 1,000 items
    for who in (["--user", "5"], ["--items", "1,2,3"]):
        code, approximate, _ = run_cli(
            monkeypatch, capsys, "recommend", run_dir, *who, "--json", *every_item
        )
        assert code == 0
        if who[0] == "--user":  # the same list; scores agree to float rounding
            rows, expected = json.loads(approximate), json.loads(exact)
            assert [r["item_id"] for r in rows] == [r["item_id"] for r in expected]
            assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in expected])
        else:
            assert len(json.loads(approximate)) == 10


@pytest.mark.parametrize(
    "name, params",
    [
        ("cml", {"item_bias": True}),
        ("lrml", {"distance": "l1"}),
        ("lrml", {"distance": "l2", "address_scale": 3.0}),
        ("hlr", {"history_size": 6}),
        ("hlr++", {"history_size": 6, "padding_quirk": True}),
        ("bpr", {}),
    ],
)
def test_candidate_scores_equal_the_full_scores(name, params):
    """The re-ranking scorer (each user's own candidates, batched) against ``score``."""
    model = random_run(name, dim=8, **params).model
    if name == "cml":
        with torch.no_grad():
            model.item_biases.normal_()
    model.block_elements = 2_000  # several user blocks
    users = torch.arange(0, 60, 2)
    history = None
    if model.uses_history:
        sampler = HistorySampler(
            random_run(name).split.everything, model.history_size, "random", "cpu"
        )
        history = sampler.sample(users, generator=torch.Generator().manual_seed(0))
    items = torch.randint(
        model.n_items, (len(users), 37), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = model.score(users, history).gather(1, items)
        got = model.score_candidates(users, history, items)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_command_line_default_is_the_library_default():
    import inspect

    from hlrm.cli import recommend_command, serve_command
    from hlrm.retrieval import DEFAULT_CANDIDATES

    for command in (recommend_command, serve_command):
        default = inspect.signature(command).parameters["ann_candidates"].default
        assert default == DEFAULT_CANDIDATES
