"""Preprocessing between reading and splitting: threshold → de-duplicate → n-core → re-index.

Every step takes and returns a frame with columns ``user`` and ``item`` (plus optional
``rating``, ``timestamp`` and any others, which are carried along). A step that leaves nothing
raises :class:`~hlrm.errors.DataError` naming itself, because "the training split is empty" three
steps later does not tell the user which knob to turn.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from hlrm.errors import ConfigError, DataError


def apply_threshold(df: pd.DataFrame, min_rating: float | None) -> pd.DataFrame:
    """Keep the rows with ``rating >= min_rating``: explicit ratings (or play counts) become
    implicit positives, as in the reference pipeline (ratings ≥ 4 for MovieLens).

    ``None`` or ``-inf`` means no threshold (the only values allowed when there are no ratings);
    ``-inf`` exists so that a resolved configuration can say "no threshold" in TOML, which has
    no null.
    """
    if min_rating is None or min_rating == -math.inf:
        return df
    if "rating" not in df:
        raise DataError(f"min_rating={min_rating:g} needs ratings, but the data has none")
    kept = df[df["rating"].to_numpy() >= min_rating]
    if kept.empty:
        top = df["rating"].max()
        raise DataError(
            f"the rating threshold min_rating={min_rating:g} removed every interaction "
            f"(the highest rating is {top:g})"
        )
    return kept.reset_index(drop=True)


def collapse_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, item) pair, at the position of its first occurrence.

    The row keeps the pair's highest ``rating`` (a pair is as positive as its best rating) and
    its earliest ``timestamp`` (when the user first met the item, so a temporal split never puts
    a re-interaction before the first one); other columns come from the first occurrence, which
    for pre-split files read train-first keeps a pair seen in both train and test in train.

    Vectorised for logs of hundreds of millions of rows: each pair becomes one int64 key,
    numbered in order of first appearance by a single ``pd.factorize``; a row is a pair's first
    when its number exceeds every number before it, and the pair's best rating and first
    timestamp are one unbuffered ``np.maximum.at`` / ``np.minimum.at`` each.
    """
    codes, pairs = pd.factorize(pair_keys(df), sort=False)
    if len(pairs) == len(df):
        return df
    first = np.ones(len(codes), dtype=bool)
    first[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
    out = df[first].reset_index(drop=True)
    if "rating" in df:
        best = np.full(len(pairs), -np.inf)
        np.maximum.at(best, codes, df["rating"].to_numpy(dtype=np.float64))
        out["rating"] = best
    if "timestamp" in df:
        earliest = np.full(len(pairs), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(earliest, codes, df["timestamp"].to_numpy(dtype=np.int64))
        out["timestamp"] = earliest
    return out


def pair_keys(df: pd.DataFrame) -> np.ndarray:
    """One int64 per row, equal for equal (user, item) pairs: ``user · 2^31 + item`` for ids
    that are integers in [0, 2^31) (no hashing at all), else the same over factorized codes."""
    columns = []
    for name in ("user", "item"):
        values = df[name].to_numpy()
        fits = values.dtype.kind in "iu" and (
            len(values) == 0 or (values.min() >= 0 and values.max() < 2**31)
        )
        columns.append(values.astype(np.int64) if fits else pd.factorize(values)[0])
    return (columns[0] << 31) | columns[1]


def filter_core(df: pd.DataFrame, user_core: int, item_core: int) -> pd.DataFrame:
    """Iterative n-core: drop users with fewer than ``user_core`` rows and items with fewer than
    ``item_core`` rows, repeatedly, until every remaining user and item meets its core.

    Dropping items can push users under their core (and vice versa), so one pass is not enough;
    at the fixpoint re-running the filter changes nothing. Apply after :func:`collapse_duplicates`
    so a row counts one distinct interaction.
    """
    for name, core in (("user_core", user_core), ("item_core", item_core)):
        if core < 0 or int(core) != core:
            raise ConfigError(f"{name} must be a non-negative integer, not {core!r}")
    if user_core <= 1 and item_core <= 1:
        return df
    users, _ = pd.factorize(df["user"])
    items, _ = pd.factorize(df["item"])
    keep = np.ones(len(df), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max() + 1)
        item_counts = np.bincount(items[keep], minlength=items.max() + 1)
        ok = keep & (user_counts[users] >= user_core) & (item_counts[items] >= item_core)
        if np.array_equal(ok, keep):
            break
        keep = ok
    if not keep.any():
        raise DataError(
            f"n-core filtering (user_core={user_core}, item_core={item_core}) removed every "
            f"interaction ({len(df)} before); lower the cores"
        )
    return df[keep].reset_index(drop=True)


class Reindexed(NamedTuple):
    """A frame whose ``user``/``item`` are ``0..n-1``, with the original id of each index."""

    frame: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray


def reindex(df: pd.DataFrame) -> Reindexed:
    """Map users and items to contiguous indices in order of first appearance (as the reference
    pipeline does), returning the original ids so results can be reported in them. The indices
    are int32 (int64 beyond 2^31 rows)."""
    if df.empty:
        raise DataError("no interactions left to index")
    users, user_ids = pd.factorize(df["user"], sort=False)
    items, item_ids = pd.factorize(df["item"], sort=False)
    frame = df.assign(user=_compact(users), item=_compact(items))
    return Reindexed(frame, _plain(user_ids), _plain(item_ids))


def _compact(codes: np.ndarray) -> np.ndarray:
    """Indices as int32 where they fit (half the memory of a log's two id columns)."""
    return codes.astype(np.int32 if len(codes) < 2**31 else np.int64)


def _plain(ids: pd.Index) -> np.ndarray:
    """Integer ids as int64, anything else as a numpy string array (no object arrays)."""
    values = np.asarray(ids)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    return values.astype(str)
