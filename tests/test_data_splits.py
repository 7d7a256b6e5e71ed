"""Splits: sizes, disjointness and coverage, and the per-method rules on tiny frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hlrm.data.splits import (
    SplitIndices,
    check_fractions,
    given_split,
    leave_one_out_split,
    random_split,
    split_interactions,
    temporal_split,
    temporal_user_split,
    user_ratio_split,
)
from hlrm.errors import ConfigError, DataError


def assert_partition(parts: SplitIndices, n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n, "parts overlap or miss rows"
    assert np.array_equal(np.sort(joined), np.arange(n))


def interactions(n_users: int = 200, seed: int = 0, with_time: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rng.integers(1, 30, n_users))
    df = pd.DataFrame({"user": users, "item": rng.integers(0, 500, len(users))})
    if with_time:
        df["timestamp"] = rng.integers(0, 10_000, len(users))
    return df


@pytest.mark.parametrize("n", [10, 1001, 10_007, 100_000])
def test_random_split_sizes_match_the_reference(n: int) -> None:
    df = pd.DataFrame({"user": np.arange(n) % 97, "item": np.arange(n) % 89})
    parts = random_split(df, (0.72, 0.08, 0.20), seed=2021)
    assert_partition(parts, n)
    assert abs(len(parts.test) - 0.20 * n) <= 1
    assert abs(len(parts.valid) - 0.08 * n) <= 1
    # the reference rounds both hold-outs up (test = ceil(20%), then valid = ceil(10% of the
    # rest)), so train, the remainder, can fall short of 72% by up to two rows
    assert -2 < len(parts.train) - 0.72 * n <= 0
    assert len(parts.test) == math.ceil(0.2 * n)
    assert len(parts.valid) == math.ceil(0.1 * (n - len(parts.test)))


def test_random_split_is_seeded_and_equals_sklearn_shuffle_split() -> None:
    df = interactions()
    a, b = random_split(df, seed=7), random_split(df, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a.test, random_split(df, seed=8).test)
    # scikit-learn's train_test_split(rows, test_size=0.2, random_state=7) holds out the first
    # ceil(0.2 n) positions of RandomState(7).permutation(n)
    n = len(df)
    expected_test = np.random.RandomState(7).permutation(n)[: math.ceil(0.2 * n)]
    assert np.array_equal(a.test, np.sort(expected_test))


def test_user_ratio_split_per_user_shares() -> None:
    df = interactions()
    parts = user_ratio_split(df, seed=3)
    assert_partition(parts, len(df))
    counts = df["user"].value_counts()
    for name, share in (("test", 0.20), ("valid", 0.08)):
        got = (
            df["user"].iloc[getattr(parts, name)].value_counts().reindex(counts.index, fill_value=0)
        )
        assert (abs(got - counts * share) <= 1).all()
    train_users = df["user"].iloc[parts.train].value_counts()
    assert train_users.reindex(counts.index, fill_value=0).min() >= 1


def test_leave_one_out_by_time() -> None:
    df = pd.DataFrame(
        {
            "user": [0, 0, 0, 0, 1, 1, 2, 2, 2],
            "item": [1, 2, 3, 4, 1, 2, 5, 6, 7],
            "timestamp": [40, 10, 30, 20, 1, 2, 5, 5, 5],
        }
    )
    parts = leave_one_out_split(df)
    assert_partition(parts, len(df))
    assert df.iloc[parts.test][["user", "item"]].values.tolist() == [[0, 1], [2, 7]]
    assert df.iloc[parts.valid][["user", "item"]].values.tolist() == [[0, 3], [2, 6]]
    # user 1 has only two rows: both stay in train; timestamp ties keep file order
    assert set(df.iloc[parts.train]["user"]) == {0, 1, 2}
    assert 4 in parts.train and 5 in parts.train


def test_leave_one_out_random_without_timestamps() -> None:
    df = interactions(with_time=False)
    parts = leave_one_out_split(df, seed=1)
    assert_partition(parts, len(df))
    eligible = (df["user"].value_counts() >= 3).sum()
    assert len(parts.test) == len(parts.valid) == eligible
    assert df["user"].iloc[parts.test].is_unique
    with pytest.raises(DataError, match="needs timestamps"):
        leave_one_out_split(df, by="time")


def test_temporal_global_cut() -> None:
    df = interactions(seed=5)
    parts = temporal_split(df)
    assert_partition(parts, len(df))
    ts = df["timestamp"].to_numpy()
    assert ts[parts.train].max() < ts[parts.valid].min()
    assert ts[parts.valid].max() < ts[parts.test].min()
    n = len(df)
    assert abs(len(parts.test) - 0.2 * n) <= 0.01 * n  # ties at the cut move whole timestamps


def test_temporal_cut_keeps_ties_together() -> None:
    df = pd.DataFrame({"user": range(10), "item": range(10), "timestamp": [1] * 6 + [2] * 4})
    parts = temporal_split(df, (0.7, 0.0, 0.3))
    assert parts.test.tolist() == [6, 7, 8, 9] and len(parts.valid) == 0


def test_temporal_per_user_takes_each_users_latest_rows() -> None:
    df = interactions(seed=9)
    parts = temporal_user_split(df)
    assert_partition(parts, len(df))
    ts = df["timestamp"].to_numpy()
    part_of = np.empty(len(df), dtype=object)
    for name in ("train", "valid", "test"):
        part_of[getattr(parts, name)] = name
    for _, rows in df.groupby("user").indices.items():
        order = rows[np.argsort(ts[rows], kind="stable")]
        labels = part_of[order].tolist()
        # along time: train rows, then valid rows, then test rows
        rank = {"train": 0, "valid": 1, "test": 2}
        assert [rank[x] for x in labels] == sorted(rank[x] for x in labels)
        assert labels[0] == "train"


@pytest.mark.parametrize("split", ["temporal", "temporal_user"])
def test_temporal_without_timestamps_is_an_error(split: str) -> None:
    with pytest.raises(DataError, match=f"split '{split}' needs timestamps"):
        split_interactions(interactions(with_time=False), split)


def test_given_split_uses_or_carves_validation() -> None:
    df = pd.DataFrame({"user": range(100), "item": range(100)})
    df["part"] = ["train"] * 70 + ["valid"] * 10 + ["test"] * 20
    parts = given_split(df)
    assert parts.valid.tolist() == list(range(70, 80)) and parts.test.tolist() == list(
        range(80, 100)
    )
    df["part"] = ["train"] * 80 + ["test"] * 20
    carved = given_split(df, seed=4)
    assert_partition(carved, 100)
    assert len(carved.valid) == 8 and set(carved.valid) < set(range(80))  # 0.08 / 0.80 of train
    assert np.array_equal(carved.valid, given_split(df, seed=4).valid)
    with pytest.raises(ConfigError, match="pre-split"):
        given_split(df.drop(columns="part"))


def test_dispatch_and_fraction_errors() -> None:
    df = interactions()
    with pytest.raises(ConfigError, match="unknown split 'kfold'"):
        split_interactions(df, "kfold")
    with pytest.raises(ConfigError, match="sum to 1"):
        check_fractions((0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="the train share must be positive"):
        check_fractions((0.0, 0.5, 0.5))
    assert check_fractions([0.8, 0.0, 0.2]) == (0.8, 0.0, 0.2)
    # a zero test share: deployment, everything but validation is trained on
    deployed = split_interactions(df, "random", fractions=(0.9, 0.1, 0.0))
    assert len(deployed.test) == 0 and len(deployed.valid) == math.ceil(0.1 * len(df))
    tiny = pd.DataFrame({"user": [0, 1], "item": [0, 1], "timestamp": [1, 2]})
    with pytest.raises(DataError, match="left the test part empty"):
        split_interactions(tiny, "leave_one_out")
