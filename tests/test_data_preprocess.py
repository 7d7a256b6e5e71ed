"""Preprocessing: threshold, de-duplication, n-core fixpoint, re-indexing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hlrm.data.preprocess import apply_threshold, collapse_duplicates, filter_core, reindex
from hlrm.errors import ConfigError, DataError


def frame(**columns: list) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_threshold_keeps_ratings_at_or_above() -> None:
    df = frame(user=[1, 1, 2, 2], item=[1, 2, 1, 3], rating=[3.5, 4.0, 5.0, 1.0])
    kept = apply_threshold(df, 4)
    assert kept["rating"].tolist() == [4.0, 5.0]
    assert kept.index.tolist() == [0, 1]


def test_no_threshold_needs_no_ratings() -> None:
    df = frame(user=[1], item=[2])
    assert apply_threshold(df, None) is df
    assert apply_threshold(df, -math.inf) is df
    with pytest.raises(DataError, match="min_rating=4 needs ratings"):
        apply_threshold(df, 4)


def test_threshold_that_empties_says_so() -> None:
    with pytest.raises(DataError, match=r"min_rating=6 removed every interaction.*highest.* 5"):
        apply_threshold(frame(user=[1], item=[1], rating=[5.0]), 6)


def test_collapse_duplicates_keeps_first_position_max_rating_earliest_time() -> None:
    df = frame(
        user=[1, 2, 1, 1],
        item=[9, 9, 9, 8],
        rating=[3.0, 4.0, 5.0, 1.0],
        timestamp=[50, 60, 10, 70],
        part=["train", "train", "test", "test"],
    )
    out = collapse_duplicates(df)
    assert out[["user", "item"]].values.tolist() == [[1, 9], [2, 9], [1, 8]]
    assert out["rating"].tolist() == [5.0, 4.0, 1.0]
    assert out["timestamp"].tolist() == [10, 60, 70]
    assert out["part"].tolist() == ["train", "train", "test"]  # a pair in both stays in train
    no_dup = frame(user=[1, 2], item=[1, 1])
    assert collapse_duplicates(no_dup) is no_dup


def random_frame(seed: int, n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.6, n) % 300
    items = rng.zipf(1.4, n) % 500
    return collapse_duplicates(frame(user=users, item=items))


@pytest.mark.parametrize(("user_core", "item_core"), [(5, 5), (10, 3), (2, 8)])
def test_n_core_reaches_the_fixpoint(user_core: int, item_core: int) -> None:
    df = random_frame(user_core * 31 + item_core)
    out = filter_core(df, user_core, item_core)
    assert len(out) > 0
    assert out["user"].value_counts().min() >= user_core
    assert out["item"].value_counts().min() >= item_core
    again = filter_core(out, user_core, item_core)
    pd.testing.assert_frame_equal(again, out)


def test_n_core_needs_more_than_one_pass() -> None:
    # dropping item 4 (one row) leaves user 2 with one row, which only a second pass removes
    df = frame(user=[1, 1, 2, 2, 3, 3, 1, 3], item=[3, 5, 3, 4, 5, 6, 6, 3])
    out = filter_core(df, 2, 2)
    assert out["user"].value_counts().min() >= 2
    assert out["item"].value_counts().min() >= 2
    assert set(out["user"]) == {1, 3} and set(out["item"]) == {3, 5, 6}


def test_n_core_errors() -> None:
    df = frame(user=[1, 2], item=[1, 2])
    with pytest.raises(DataError, match=r"n-core filtering \(user_core=3, item_core=1\)"):
        filter_core(df, 3, 1)
    with pytest.raises(ConfigError, match="user_core must be a non-negative integer"):
        filter_core(df, -1, 1)
    assert filter_core(df, 1, 0) is df


def test_reindex_in_order_of_first_appearance() -> None:
    df = frame(user=[30, 10, 30, 20], item=["b", "a", "a", "c"], rating=[1.0, 2.0, 3.0, 4.0])
    out, user_ids, item_ids = reindex(df)
    assert out["user"].tolist() == [0, 1, 0, 2]
    assert out["item"].tolist() == [0, 1, 1, 2]
    assert user_ids.tolist() == [30, 10, 20] and user_ids.dtype == np.int64
    assert item_ids.tolist() == ["b", "a", "c"] and item_ids.dtype.kind == "U"
    assert out["rating"].tolist() == [1.0, 2.0, 3.0, 4.0]
