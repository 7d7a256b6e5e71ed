"""The estimator API (hlrm.HLR(...).fit(frame) ...) on small in-memory data."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import hlrm
from hlrm.data.synthetic import make_synthetic
from hlrm.errors import ConfigError, DataError, HlrmError, UnknownIdError

FAST = {"dim": 16, "negatives": 20, "batch_size": 256, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    """String ids, a rating and a timestamp column named as people name them."""
    raw = make_synthetic(n_users=120, n_items=60, interactions_per_user=10, seed=3)
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "user_id": "user-" + raw["user"].astype(str),
            "item_id": "item-" + raw["item"].astype(str),
            "rating": rng.integers(1, 6, len(raw)),
            "timestamp": raw["timestamp"],
        }
    )


@pytest.fixture(scope="module")
def titles(ratings) -> dict[str, str]:
    return {item: f"Title of {item}" for item in ratings["item_id"].unique()}


@pytest.fixture(scope="module")
def hlr(ratings, titles):
    model = hlrm.HLR(n_slots=4, history_size=8, epochs=2, patience=1, pretrain="none", **FAST)
    return model.fit(ratings, item_titles=titles)


def had(ratings: pd.DataFrame) -> dict[str, set[str]]:
    return ratings.groupby("user_id")["item_id"].agg(set).to_dict()


def test_fit_chooses_epochs_on_validation_then_refits_on_everything(hlr, ratings):
    run = hlr.run_
    assert run.config.final and run.validation is not None
    assert run.best_epoch == run.validation.best_epoch  # the refit trains that many
    assert run.split.train.nnz == len(ratings.drop_duplicates(["user_id", "item_id"]))
    assert run.split.valid.nnz == 0 and run.split.test.nnz == 0
    # the columns were recognised by their names
    assert (run.config.data.user_col, run.config.data.rating_col) == ("user_id", "rating")


def test_recommend_many_users_never_returns_what_they_have(hlr, ratings):
    users = sorted(ratings["user_id"].unique())[:30]
    recs = hlr.recommend(users, k=5)
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score", "title"]
    assert len(recs) == 30 * 5
    assert list(recs["user_id"].unique()) == users  # in the order given
    seen = had(ratings)
    for user, rows in recs.groupby("user_id"):
        assert not set(rows["item_id"]) & seen[user]
        assert list(rows["rank"]) == [1, 2, 3, 4, 5]
        assert rows["score"].is_monotonic_decreasing
    assert (recs["title"] == "Title of " + recs["item_id"]).all()
    one = hlr.recommend(users[3], k=5)  # one id, not a list
    assert list(one["item_id"]) == list(recs[recs["user_id"] == users[3]]["item_id"])
    everything = hlr.recommend(users[:1], k=60, filter_already_liked=False)
    assert len(everything) == 60
    with pytest.raises(UnknownIdError, match="unknown user id 'nobody'"):
        hlr.recommend(["nobody"])


def test_new_user_similar_items_and_explanations(hlr, ratings):
    given = ["item-1", "item-2", "item-3"]
    new = hlr.recommend_items(given, k=4)
    assert list(new.columns) == ["rank", "item_id", "score", "title"]
    assert len(new) == 4 and not set(new["item_id"]) & set(given)
    similar = hlr.similar_items(["item-5", "item-6"], k=3)
    assert list(similar.columns) == ["item_id", "rank", "similar_item_id", "score", "title"]
    assert len(similar) == 6 and not (similar["item_id"] == similar["similar_item_id"]).any()
    user = ratings["user_id"].iloc[0]
    item = hlr.recommend(user, k=1)["item_id"].iloc[0]
    why = hlr.explain(user, item)
    assert set(why["module"]) == {"user_attention", "history_effect"}
    history = had(ratings)[user]
    assert set(why["item_id"].dropna()) <= history
    attention = why[why["module"] == "user_attention"]
    assert attention["weight"].is_monotonic_decreasing
    assert (attention["uniform"] == attention["uniform"].iloc[0]).all()
    effects = why[why["module"] == "history_effect"]
    assert effects["effect"].is_monotonic_decreasing and effects["share"].abs().max() <= 1


def test_save_and_load_give_identical_recommendations(hlr, ratings, tmp_path):
    users = sorted(ratings["user_id"].unique())[:10]
    path = hlr.save(tmp_path / "model")
    loaded = hlrm.load(path)
    assert type(loaded) is hlrm.HLR
    assert loaded.get_params()["dim"] == 16
    pd.testing.assert_frame_equal(loaded.recommend(users, k=5), hlr.recommend(users, k=5))
    pd.testing.assert_frame_equal(
        loaded.similar_items(["item-4"], k=3), hlr.similar_items(["item-4"], k=3)
    )
    with pytest.raises(HlrmError, match="not an empty directory"):
        hlr.save(path)


def test_params_follow_scikit_learn_conventions():
    model = hlrm.CML(dim=8, epochs=5)
    params = model.get_params()
    assert params["dim"] == 8 and params["epochs"] == 5 and params["validation"] == 0.1
    assert params["max_norm"] == 1.0 and params["loss"] == "softmax"  # defaults and recipe
    assert model.set_params(lr=0.01) is model and model.get_params()["lr"] == 0.01
    assert repr(model) == "CML(dim=8, epochs=5, lr=0.01)"
    generic = hlrm.Estimator("cml", dim=8)
    assert generic.get_params()["model"] == "cml"
    assert type(generic)(**generic.get_params()).get_params() == generic.get_params()
    with pytest.raises(ConfigError, match="has no option"):
        hlrm.HLR(nonsense=1)
    with pytest.raises(ConfigError, match="validation must be a share"):
        hlrm.CML(validation=1.5)
    with pytest.raises(ConfigError, match="not fitted"):
        hlrm.CML().recommend(["u"])


def test_scipy_matrix_with_id_maps():
    rng = np.random.default_rng(1)
    dense = (rng.random((40, 25)) < 0.25).astype(np.float32)
    dense[:, 0] = 1.0  # every user has an item
    matrix = sp.csr_matrix(dense)
    users = [f"u{i}" for i in range(40)]
    items = [f"i{j}" for j in range(25)]
    model = hlrm.BPR(epochs=2, validation=0, **FAST)
    model.fit(matrix, user_ids=users, item_ids=items)
    assert model.run_.best_epoch == 2 and model.run_.validation is None  # fixed epochs
    recs = model.recommend(users, k=3)
    for user, rows in recs.groupby("user_id"):
        owned = {items[j] for j in np.flatnonzero(dense[users.index(user)])}
        assert not set(rows["item_id"]) & owned
    assert "title" not in recs.columns
    plain = hlrm.ItemKNN(neighbors=5, **{"progress": False}).fit(matrix)  # positions as ids
    assert set(plain.recommend([0, 1], k=2)["user_id"]) == {0, 1}
    with pytest.raises(ConfigError, match="user_ids has 3 ids"):
        model.fit(matrix, user_ids=["a", "b", "c"])


def test_input_errors_are_clear(ratings):
    model = hlrm.Popularity(progress=False)
    with pytest.raises(DataError, match="no user column"):
        model.fit(ratings.rename(columns={"user_id": "who"}))
    with pytest.raises(ConfigError, match="DataFrame or a SciPy sparse matrix"):
        model.fit([("u", "i")])
    broken = ratings.head(20).copy()
    broken.loc[3, "item_id"] = None
    with pytest.raises(DataError, match="missing values"):
        model.fit(broken)
    renamed = ratings.rename(columns={"user_id": "who", "item_id": "what"})
    assert model.fit(renamed, user_col="who", item_col="what").run_ is not None
    kept = model.fit(ratings, min_rating=4).run_.split.train.nnz
    assert kept == len(ratings[ratings["rating"] >= 4].drop_duplicates(["user_id", "item_id"]))


def test_import_hlrm_does_not_load_torch():
    code = "import sys, hlrm; assert 'torch' not in sys.modules; print(hlrm.HLR.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "HLR"


def test_a_two_stage_model_fits_in_memory(ratings):
    """HLR starts from a CML stage by default; both stages train on the in-memory split, and
    the final refit starts from the validation run's first stage."""
    small = ratings[ratings["user_id"].isin(ratings["user_id"].unique()[:40])]
    model = hlrm.HLR(n_slots=2, history_size=4, epochs=1, **FAST).fit(small)
    assert model.run_.validation.first_stage is not None
    assert model.run_.first_stage is model.run_.validation.first_stage
    assert len(model.recommend(small["user_id"].iloc[0], k=3)) == 3
    with pytest.raises(ConfigError, match="trains in two stages"):
        hlrm.HLR(epochs=1, validation=0, **FAST).fit(small)
