"""Train / validation / test splits of an interaction frame.

Every function returns :class:`SplitIndices`: sorted row positions into the frame, disjoint and
together covering every row. Randomness comes from numpy generators seeded by one integer, so a
split is a pure function of (frame, method, fractions, seed).

``fractions`` is always ``(train, valid, test)`` and must sum to 1. A zero test share leaves the
test part empty: a model trained for deployment on everything but its validation share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from hlrm.errors import ConfigError, DataError

#: Split methods :func:`split_interactions` knows.
SPLITS = ("random", "user_ratio", "leave_one_out", "temporal", "temporal_user", "given")
DEFAULT_FRACTIONS = (0.72, 0.08, 0.20)


class SplitIndices(NamedTuple):
    """Row positions of each part (sorted int64 arrays)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(train, valid, test)``: three non-negative numbers summing to 1 with a positive
    train share (valid and test may be 0: no model selection, no test evaluation)."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values):
        raise ConfigError(f"fractions must be three non-negative numbers, not {fractions!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"fractions {values} must sum to 1 (train, valid, test)")
    if values[0] == 0:
        raise ConfigError(f"fractions {values}: the train share must be positive")
    return values[0], values[1], values[2]


def random_split(
    df: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 2021
) -> SplitIndices:
    """Interaction-level random split, as the reference code's ``fo`` split.

    First the test share of all rows, then validation carved from the rest with share
    ``valid / (train + valid)`` (0.08 / 0.80 = 10%). Each stage equals scikit-learn's
    ``train_test_split(rows, test_size=share, random_state=seed)``: a ``RandomState(seed)``
    permutation whose first ``ceil(share · n)`` positions are held out, so with the same row
    order the split reproduces the reference one.
    """
    train_share, valid_share, test_share = check_fractions(fractions)
    rest, test = _holdout(np.arange(len(df)), test_share, seed)
    train, valid = _holdout(rest, _share_of_rest(train_share, valid_share), seed)
    return _sorted(train, valid, test)


def user_ratio_split(
    df: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 2021
) -> SplitIndices:
    """Per user, a random ``fractions`` share of the user's rows (rounded; at least one row
    stays in train), so every user with enough rows is evaluated."""
    check_fractions(fractions)
    key = np.random.default_rng(seed).random(len(df))
    return _per_user_tail(df, key, *_ratio_counts(df, fractions))


def leave_one_out_split(df: pd.DataFrame, *, by: str = "auto", seed: int = 2021) -> SplitIndices:
    """Per user one test row and one validation row: the last and second-to-last by timestamp
    (``by="time"``), or two random rows (``by="random"``); ``"auto"`` uses time when the frame
    has timestamps. Users with fewer than 3 rows keep all of them in train, so every user in
    valid/test still has training history. Timestamp ties keep file order (later line = later).
    """
    if by not in ("auto", "time", "random"):
        raise ConfigError(f"leave-one-out by must be 'auto', 'time' or 'random', not {by!r}")
    if by == "time" or (by == "auto" and "timestamp" in df):
        key = _timestamps(df, "leave_one_out by time")
    else:
        key = np.random.default_rng(seed).random(len(df))
    counts = _user_counts(df)
    one = (counts >= 3).astype(np.int64)
    return _per_user_tail(df, key, one, one)


def temporal_split(
    df: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> SplitIndices:
    """A global time cut: the latest ``test`` share of rows is test, the ``valid`` share before it
    is validation. Cuts fall on timestamp values, so rows sharing a timestamp land in the same
    part and no training row is later than any validation or test row."""
    _, valid_share, test_share = check_fractions(fractions)
    ts = _timestamps(df, "temporal")
    ordered = np.sort(ts, kind="stable")
    n = len(ts)
    n_test = round(test_share * n)
    n_valid = round(valid_share * n)
    test_from = ordered[n - n_test] if n_test else np.inf
    valid_from = ordered[max(n - n_test - n_valid, 0)] if n_valid else test_from
    test = np.flatnonzero(ts >= test_from)
    valid = np.flatnonzero((ts >= valid_from) & (ts < test_from))
    train = np.flatnonzero(ts < valid_from)
    return SplitIndices(train, valid, test)


def temporal_user_split(
    df: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> SplitIndices:
    """Per user, the latest ``test`` share of the user's rows is test and the ``valid`` share
    before it validation (the reference code's ``utfo``); at least one row stays in train."""
    check_fractions(fractions)
    return _per_user_tail(df, _timestamps(df, "temporal_user"), *_ratio_counts(df, fractions))


def given_split(
    df: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 2021
) -> SplitIndices:
    """Use the split that shipped with the data (column ``part``: train / valid / test).

    Without a ``valid`` part, validation is carved at random from train with share
    ``valid / (train + valid)`` of ``fractions`` (the test share is ignored: test is given).
    """
    if "part" not in df:
        raise ConfigError("split 'given' needs pre-split train/test files")
    train_share, valid_share, _ = check_fractions(fractions)
    part = df["part"].to_numpy()
    train = np.flatnonzero(part == "train")
    valid = np.flatnonzero(part == "valid")
    test = np.flatnonzero(part == "test")
    if len(valid) == 0:
        train, valid = _holdout(train, _share_of_rest(train_share, valid_share), seed)
    return _sorted(train, valid, test)


def split_interactions(
    df: pd.DataFrame,
    method: str,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 2021,
) -> SplitIndices:
    """Split with ``method`` (one of :data:`SPLITS`); an empty train part, or an empty test part
    where the test share is not 0, is an error here, where the method and the sizes can still
    be named."""
    if method == "random":
        parts = random_split(df, fractions, seed)
    elif method == "user_ratio":
        parts = user_ratio_split(df, fractions, seed)
    elif method == "leave_one_out":
        parts = leave_one_out_split(df, seed=seed)
    elif method == "temporal":
        parts = temporal_split(df, fractions)
    elif method == "temporal_user":
        parts = temporal_user_split(df, fractions)
    elif method == "given":
        parts = given_split(df, fractions, seed)
    else:
        raise ConfigError(f"unknown split {method!r}; expected one of {', '.join(SPLITS)}")
    required = ("train", "test") if check_fractions(fractions)[2] > 0 else ("train",)
    for name in required:
        if len(getattr(parts, name)) == 0:
            raise DataError(
                f"split {method!r} left the {name} part empty ({len(df)} interactions, "
                f"{_user_counts(df).size} users)"
            )
    return parts


# ---- helpers -------------------------------------------------------------------------------------
def _holdout(rows: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): scikit-learn's ShuffleSplit with ``test_size=share``."""
    n_out = math.ceil(share * len(rows))
    permutation = np.random.RandomState(seed).permutation(len(rows))
    return rows[permutation[n_out:]], rows[permutation[:n_out]]


def _share_of_rest(train_share: float, valid_share: float) -> float:
    # Rounded so that 0.08 / 0.80 is exactly 0.1 (not 0.09999999999999999).
    return round(valid_share / (train_share + valid_share), 12)


def _sorted(train: np.ndarray, valid: np.ndarray, test: np.ndarray) -> SplitIndices:
    return SplitIndices(*(np.sort(p).astype(np.int64) for p in (train, valid, test)))


def _timestamps(df: pd.DataFrame, method: str) -> np.ndarray:
    if "timestamp" not in df:
        raise DataError(f"split {method!r} needs timestamps, but the data has none")
    return df["timestamp"].to_numpy()


def _user_codes(df: pd.DataFrame) -> np.ndarray:
    return pd.factorize(df["user"])[0]


def _user_counts(df: pd.DataFrame) -> np.ndarray:
    return np.bincount(_user_codes(df))


def _ratio_counts(df: pd.DataFrame, fractions: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per user (test, valid) row counts: shares rounded half up, leaving ≥ 1 row in train."""
    _, valid_share, test_share = check_fractions(fractions)
    counts = _user_counts(df)
    n_test = np.minimum(np.floor(counts * test_share + 0.5).astype(np.int64), counts - 1)
    n_valid = np.floor(counts * valid_share + 0.5).astype(np.int64)
    n_valid = np.minimum(n_valid, counts - 1 - n_test)
    return n_test, n_valid


def _per_user_tail(
    df: pd.DataFrame, key: np.ndarray, n_test: np.ndarray, n_valid: np.ndarray
) -> SplitIndices:
    """Per user, the ``n_test`` rows with the largest ``key`` go to test, the next ``n_valid``
    to valid, the rest to train (ties: the later row counts as larger)."""
    users = _user_codes(df)
    order = np.lexsort((key, users))
    counts = np.bincount(users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    owner = users[order]
    from_end = counts[owner] - 1 - (np.arange(len(order)) - starts[owner])
    in_test = from_end < n_test[owner]
    in_valid = ~in_test & (from_end < n_test[owner] + n_valid[owner])
    return _sorted(order[~in_test & ~in_valid], order[in_valid], order[in_test])
