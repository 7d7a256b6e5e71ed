"""Recommendations, explanations and fold-in through the Python API."""

import numpy as np
import pytest
import torch

from hlrm.config import RunConfig
from hlrm.data.pipeline import DataConfig
from hlrm.errors import DataError
from hlrm.runs import Run, recommend, train
from hlrm.training.foldin import fold_in_user


def synthetic_run(model: str, epochs: int, tmp_path, lr: float = 0.003, **params) -> Run:
    config = RunConfig(data=DataConfig(dataset="synthetic"))
    config.model.name = model
    config.model.params = params
    config.train.epochs = epochs
    config.train.lr = lr
    config.train.device = "cpu"
    config.eval.ks = [10]
    train(config, tmp_path / model, progress=False)
    return Run.open(tmp_path / model)


@pytest.fixture(scope="module")
def cml_run(tmp_path_factory):
    # trained to convergence, so the trained user vectors are a fair target for fold-in
    return synthetic_run("cml", 30, tmp_path_factory.mktemp("cml"), lr=0.01, dim=32)


def test_recommendations_skip_known_items(cml_run):
    user = cml_run.split.user_ids[3]
    recs = recommend(cml_run, user=user, k=10)
    assert len(recs) == 10
    known = set(cml_run.split.everything[3].indices)  # test items too: deployment, not a test
    assert set(cml_run.split.test[3].indices) <= known
    assert not known & {r.item for r in recs}
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_unknown_ids_are_clear_errors(cml_run):
    with pytest.raises(DataError, match="unknown user id"):
        recommend(cml_run, user="no-such-user")
    with pytest.raises(DataError, match="unknown item id"):
        recommend(cml_run, items=["no-such-item"])


def test_folded_in_training_user_lands_close_to_their_trained_ranking(cml_run):
    split, model = cml_run.split, cml_run.model
    overlaps, baseline = [], []
    for user in range(0, 200, 20):
        items = split.train_valid[user].indices
        extended, known = fold_in_user(model, split.train_valid, items, seed=user)
        with torch.no_grad():
            trained = model.score(torch.tensor([user]))[0]
            folded = extended.score(torch.tensor([model.n_users]))[0]
            stranger = model.score(torch.tensor([user + 1]))[0]
        mask = torch.from_numpy(items.astype(np.int64))
        for scores in (trained, folded, stranger):
            scores[mask] = -torch.inf
        top = set(torch.topk(trained, 10).indices.tolist())
        overlaps.append(len(top & set(torch.topk(folded, 10).indices.tolist())) / 10)
        baseline.append(len(top & set(torch.topk(stranger, 10).indices.tolist())) / 10)
        # the rest of the model is untouched
        assert torch.equal(extended.item_embeddings, model.item_embeddings)
    # measured: about 0.6 top-10 overlap with the trained list, against 0.05 for another user
    assert np.mean(overlaps) >= 0.45
    assert np.mean(overlaps) > np.mean(baseline) + 0.3


def test_new_user_by_items(cml_run):
    items = [str(v) for v in cml_run.split.item_ids[[1, 11, 21, 31]]]
    recs = recommend(cml_run, items=items, k=5)
    assert len(recs) == 5
    assert not {r.item_id for r in recs} & set(items)


def test_hlr_explanations_name_history_items(tmp_path):
    run = synthetic_run("hlr", 1, tmp_path, dim=16, history_size=8)
    user = run.split.user_ids[0]
    recs = recommend(run, user=user, k=3, explain=True)
    history = {str(v) for v in run.split.item_ids[run.split.everything[0].indices]}
    for rec in recs:
        attention = rec.explanation["user_attention"]
        weights = [row["weight"] for row in attention]
        assert weights == sorted(weights, reverse=True)
        for row in attention:
            assert row.get("slot") == "user" or row["item_id"] in history
    folded = recommend(run, items=sorted(history)[:5], k=3, explain=True)
    assert len(folded) == 3 and folded[0].explanation
