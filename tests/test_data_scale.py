"""Logs at scale: the chunked synthetic generator, the vectorised de-duplication and statistics
that never build a dense (users × items) matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from hlrm.data.matrix import SplitData
from hlrm.data.pipeline import DataConfig, describe, load_split
from hlrm.data.preprocess import collapse_duplicates, reindex
from hlrm.data.synthetic import synthetic_log, write_synthetic_log
from hlrm.errors import ConfigError


def test_synthetic_log_is_chunked_int32_deterministic_and_has_its_groups():
    chunks = list(synthetic_log(25_000, n_users=500, n_items=2_000, n_clusters=10, chunk=10_000))
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_000]
    again = list(synthetic_log(25_000, n_users=500, n_items=2_000, n_clusters=10, chunk=10_000))
    for left, right in zip(chunks, again, strict=True):
        pd.testing.assert_frame_equal(left, right)
    log = pd.concat(chunks, ignore_index=True)
    assert log["user"].dtype == np.int32 and log["item"].dtype == np.int32
    assert log["user"].between(0, 499).all() and log["item"].between(0, 1_999).all()
    same = (log["user"] % 10 == log["item"] % 10).mean()
    assert abs(same - (0.8 + 0.2 / 10)) < 0.02  # planted groups: 80% inside, the rest anywhere
    counts = log["item"].value_counts()
    assert counts.iloc[0] > 20 * counts.median()  # Zipf popularity


def test_synthetic_log_rejects_impossible_sizes_in_one_line():
    with pytest.raises(ConfigError, match="n_clusters"):
        next(synthetic_log(100, n_users=10, n_items=5, n_clusters=10))
    with pytest.raises(ConfigError, match="int32"):
        next(synthetic_log(100, n_users=2**31, n_items=100))


def test_a_written_log_reads_back_through_the_pipeline(tmp_path):
    path = write_synthetic_log(tmp_path / "log.parquet", 20_000, n_users=400, n_items=1_000)
    split = load_split(DataConfig(path=str(path), split="random"))
    log = pd.concat(synthetic_log(20_000, n_users=400, n_items=1_000), ignore_index=True)
    distinct = len(log.drop_duplicates(["user", "item"]))
    assert split.train.nnz + split.valid.nnz + split.test.nnz == distinct
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("ids", ["int", "str", "large"])
def test_collapse_duplicates_keeps_first_rows_best_rating_and_earliest_time(ids):
    rng = np.random.default_rng(1)
    n = 5_000
    frame = pd.DataFrame(
        {
            "user": rng.integers(0, 40, n),
            "item": rng.integers(0, 60, n),
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": rng.integers(0, 10**9, n),
        }
    )
    if ids == "str":
        frame["user"] = "u" + frame["user"].astype(str)
    if ids == "large":
        frame["item"] = frame["item"] + 2**40
    got = collapse_duplicates(frame)
    groups = frame.groupby(["user", "item"], sort=False)
    expected = frame.drop_duplicates(["user", "item"]).reset_index(drop=True)
    expected["rating"] = groups["rating"].max().to_numpy()
    expected["timestamp"] = groups["timestamp"].min().to_numpy()
    pd.testing.assert_frame_equal(got, expected)


def test_reindexed_ids_are_int32():
    frame, users, items = reindex(pd.DataFrame({"user": [10, 20, 10], "item": [7, 7, 8]}))
    assert frame["user"].dtype == np.int32 and frame["item"].dtype == np.int32
    assert frame["user"].tolist() == [0, 1, 0] and items.tolist() == [7, 8]


def test_statistics_never_build_a_dense_matrix():
    """Two million users by a million items: dense, 8 TB; the statistics read the CSR only."""
    shape = (2_000_000, 1_000_000)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, shape[0], 30_000), rng.integers(0, shape[1], 30_000)
    train = sp.csr_matrix((np.ones(30_000, np.float32), (rows, cols)), shape=shape)
    train.sum_duplicates()
    empty = sp.csr_matrix(shape, dtype=np.float32)
    split = SplitData(
        train, empty, empty.copy(), user_ids=np.arange(shape[0]), item_ids=np.arange(shape[1])
    )
    stats = describe(split)
    assert stats["users"] == shape[0] and stats["interactions"] == train.nnz
    assert stats["density"] == train.nnz / (shape[0] * shape[1])
