"""The pipeline: configuration defaults, own files, pre-split folders, real and synthetic data."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import tomli_w

from hlrm.data import registry
from hlrm.data.pipeline import DataConfig, describe, load_split
from hlrm.data.readers import read_interactions
from hlrm.data.synthetic import DEFAULT_INTERACTIONS, make_synthetic
from hlrm.errors import ConfigError, DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HLRM_DATA_DIR", raising=False)
    monkeypatch.setenv("HLRM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "_VERIFIED", set())

    def no_network(url: str, destination: Path) -> None:
        raise OSError("offline")

    monkeypatch.setattr(registry, "fetch_url", no_network)


@pytest.fixture
def shared_data(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HLRM_DATA_DIR", str(data_dir))
    return data_dir


def toml_round_trip(config: DataConfig) -> DataConfig:
    values = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    loaded = tomllib.loads(tomli_w.dumps(values))
    loaded["fractions"] = tuple(loaded["fractions"])
    return DataConfig(**loaded)


# ---- configuration -------------------------------------------------------------------------------
def test_resolved_dataset_defaults_survive_toml() -> None:
    config = DataConfig(dataset="ml-100k").resolved()
    assert (config.format, config.min_rating, config.split) == ("movielens", 4.0, "random")
    assert (config.user_core, config.item_core) == (10, 10)
    assert config.user_col is None and config.sep is None
    assert config.resolved() == config
    assert toml_round_trip(config).resolved() == config
    gowalla = DataConfig(dataset="gowalla", user_core=5).resolved()
    assert (gowalla.split, gowalla.min_rating, gowalla.user_core) == ("given", -math.inf, 5)


def test_resolved_own_file_defaults(tmp_path: Path) -> None:
    config = DataConfig(path=str(tmp_path / "mine.csv")).resolved()
    # Columns not given are found by their common names when the file is read.
    assert (config.format, config.sep, config.user_col, config.item_col) == ("csv", ",", None, None)
    assert config.path == str(tmp_path / "mine.csv")
    assert (config.min_rating, config.user_core, config.item_core) == (-math.inf, 1, 1)
    assert config.split == "random" and config.rating_col is None
    assert toml_round_trip(config) == config
    assert DataConfig(path="x/u.data.xz").resolved().format == "movielens"


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        (DataConfig(), "exactly one of dataset"),
        (DataConfig(dataset="ml-100k", path="x.csv"), "exactly one of dataset"),
        (DataConfig(dataset="nope"), "unknown dataset 'nope'"),
        (DataConfig(dataset="ml-100k", format="csv"), "read as 'movielens'"),
        (DataConfig(dataset="ml-100k", split="given"), "split 'given' needs pre-split"),
        (DataConfig(dataset="ml-100k", split="kfold"), "unknown split 'kfold'"),
        (DataConfig(dataset="ml-100k", user_col="u"), "user_col only apply"),
        (DataConfig(path="x.csv", fractions=(0.9, 0.1, 0.1)), "sum to 1"),
        (DataConfig(path="train.txt"), "cannot tell the format of 'train.txt'"),
        (DataConfig(path="x.txt", format="excel"), "unknown format 'excel'"),
        (DataConfig(path="x.parquet", sep=","), "sep does not apply"),
    ],
)
def test_configuration_errors(config: DataConfig, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        config.resolved()


# ---- own files -----------------------------------------------------------------------------------
def test_own_csv_keeps_original_ids(tmp_path: Path) -> None:
    lines = ["who,what,stars"] + [
        f"u{u},{i},{(u + i) % 5 + 1}" for u in range(30) for i in range(20)
    ]
    path = tmp_path / "mine.csv"
    path.write_text("\n".join(lines) + "\n")
    split = load_split(
        DataConfig(
            path=str(path), item_col="what", user_col="who", rating_col="stars", min_rating=3
        )
    )
    assert split.name == "mine"
    assert split.user_ids[0] == "u0" and split.user_ids.dtype.kind == "U"
    assert split.item_ids.dtype == np.int64 and sorted(split.item_ids.tolist()) == list(range(20))
    assert split.train.nnz + split.valid.nnz + split.test.nnz == 360  # ratings 3, 4 and 5
    assert split.users.index("u7") == 7


def test_own_file_without_timestamps_cannot_split_by_time(tmp_path: Path) -> None:
    path = tmp_path / "mine.tsv"
    path.write_text("user\titem\n" + "".join(f"{u}\t{i}\n" for u in range(5) for i in range(5)))
    with pytest.raises(DataError, match="split 'temporal' needs timestamps"):
        load_split(DataConfig(path=str(path), split="temporal"))


def test_directory_of_pre_split_files(tmp_path: Path) -> None:
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "train.txt").write_text(
        "".join(f"{u} " + " ".join(str((u + k) % 40) for k in range(10)) + "\n" for u in range(20))
    )
    (folder / "test.txt").write_text(
        "".join(f"{u} {(u + 10) % 40} {(u + 11) % 40}\n" for u in range(20))
    )
    (folder / "notes.md").write_text("ignored")
    split = load_split(DataConfig(path=str(folder), format="lightgcn"))
    assert split.name == "mydata"
    assert (split.test.nnz, split.train.nnz + split.valid.nnz) == (40, 200)
    assert split.valid.nnz == 20  # 0.08 / 0.80 of the training file
    for u in range(20):
        row = split.users.index(u)
        test_items = split.item_ids[split.test[row].indices].tolist()
        assert sorted(test_items) == sorted([(u + 10) % 40, (u + 11) % 40])
    random = load_split(DataConfig(path=str(folder), format="lightgcn", split="random"))
    assert random.test.nnz == 48  # ceil(20% of the 240 pooled rows)


def test_directory_without_a_test_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="expected a train and a test file"):
        load_split(DataConfig(path=str(tmp_path)))


# ---- synthetic -----------------------------------------------------------------------------------
def test_synthetic_is_fast_and_deterministic() -> None:
    start = time.perf_counter()
    df = make_synthetic(seed=5)
    assert time.perf_counter() - start < 1.0
    assert len(df) == DEFAULT_INTERACTIONS
    assert not df.duplicated(["user", "item"]).any()
    assert df.equals(make_synthetic(seed=5))
    assert not df.equals(make_synthetic(seed=6))
    assert df["user"].value_counts().min() >= 5
    with pytest.raises(ConfigError, match="interactions_per_user"):
        make_synthetic(n_items=40, interactions_per_user=20)


def ndcg_at_10(scores: np.ndarray, split) -> float:
    scores = np.where(split.train_valid.toarray() > 0, -np.inf, scores)
    top = np.argsort(-scores, axis=1)[:, :10]
    test = split.test.toarray() > 0
    users = np.flatnonzero(test.any(axis=1))
    discount = 1.0 / np.log2(np.arange(2, 12))
    gains = (test[users[:, None], top[users]] * discount).sum(axis=1)
    ideal = np.array([discount[: min(n, 10)].sum() for n in test[users].sum(axis=1)])
    return float((gains / ideal).mean())


def test_synthetic_has_planted_structure() -> None:
    split = load_split(DataConfig(dataset="synthetic"))
    stats = describe(split)
    assert (stats["users"], stats["items"], stats["interactions"]) == (2000, 1000, 50_000)
    popularity = np.broadcast_to(split.item_popularity.astype(float), split.train.shape)
    groups = 10
    same_group = (split.user_ids[:, None] % groups) == (split.item_ids[None, :] % groups)
    oracle = popularity + 1e9 * same_group  # the user's group first, popular first within it
    pop_ndcg, oracle_ndcg = ndcg_at_10(popularity, split), ndcg_at_10(oracle, split)
    assert pop_ndcg > 0.02
    assert oracle_ndcg >= 2 * pop_ndcg


def test_describe_reports_split_statistics() -> None:
    split = load_split(DataConfig(dataset="synthetic", split="leave_one_out"))
    stats = describe(split)
    assert stats["test"] == stats["valid"] == 2000
    assert stats["train"] + stats["valid"] + stats["test"] == stats["interactions"]
    assert stats["test_users_without_train"] == 0 and stats["has_titles"] is False
    assert 0 < stats["density"] < 1


# ---- the shared datasets -------------------------------------------------------------------------
@pytest.mark.dataset
def test_ml100k_published_counts_and_titles(shared_data: Path) -> None:
    raw = read_interactions(
        registry.resolve_files(registry.get_dataset("ml-100k"))["ratings"], "movielens"
    )
    assert (len(raw), raw["user"].nunique(), raw["item"].nunique()) == (100_000, 943, 1682)
    everything = load_split(
        DataConfig(dataset="ml-100k", min_rating=-math.inf, user_core=1, item_core=1)
    )
    stats = describe(everything)
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    toy_story = everything.items.index(1)
    assert everything.item_titles[toy_story] == "Toy Story (1995)"
    default = load_split(DataConfig(dataset="ml-100k"))
    counts = np.diff((default.train + default.valid + default.test).tocsr().indptr)
    assert counts.min() >= 10 and stats["interactions"] > describe(default)["interactions"]


@pytest.mark.dataset
def test_gowalla_given_split(shared_data: Path) -> None:
    split = load_split(DataConfig(dataset="gowalla"))
    assert (split.n_users, split.n_items) == (29_858, 40_981)
    assert split.train.nnz + split.valid.nnz == 810_128
    assert split.test.nnz == 217_242
    assert split.valid.nnz == math.ceil(0.1 * 810_128)
    assert (split.train.multiply(split.test)).nnz == 0 and split.train.multiply(
        split.valid
    ).nnz == 0
    assert isinstance(split.train, sp.csr_matrix)


@pytest.mark.dataset
def test_ml1m_local_copy_has_no_timestamps(shared_data: Path) -> None:
    with pytest.raises(DataError, match="split 'temporal' needs timestamps"):
        load_split(DataConfig(dataset="ml-1m", split="temporal"))


def test_data_notes_warn_about_very_sparse_data():
    import numpy as np

    from hlrm.data.matrix import SplitData, binary_csr
    from hlrm.data.pipeline import data_notes

    shape = (100, 50)
    users = np.arange(100)
    train = binary_csr(users[:40], users[:40] % 50, shape)  # 60 users have no training item
    test = binary_csr(users, (users + 1) % 50, shape)
    empty = binary_csr(np.array([], dtype=int), np.array([], dtype=int), shape)
    split = SplitData(train, empty, test, user_ids=np.arange(100), item_ids=np.arange(50))
    notes = data_notes(split)
    assert any("very sparse" in note for note in notes)
    assert any("60% of the test users" in note for note in notes)
