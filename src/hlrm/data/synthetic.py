"""A synthetic implicit-feedback data set with planted structure, for demos and tests.

Users and items fall into ``n_clusters`` taste groups: user ``u`` belongs to group
``u % n_clusters`` and item ``i`` to group ``i % n_clusters`` (a fixed rule, so a test can recover
the groups from the ids alone). Each user draws distinct items with probability proportional to
``popularity(i) · exp(affinity · [same group])`` (Gumbel top-k sampling without replacement), where
popularity follows a Zipf law over a random item order. Most of a user's items therefore come
from the user's own group, but popular items of other groups show up too: a model that learns
the groups (a metric-learning model does, since same-group users and items can sit together in
space) beats the popularity baseline by a wide margin, while popularity is still a sensible
baseline rather than a useless one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hlrm.errors import ConfigError

#: Interactions of ``make_synthetic()`` with its defaults (2,000 users × 25).
DEFAULT_INTERACTIONS = 50_000
_START = 1_577_836_800  # 2020-01-01T00:00:00Z
_YEAR = 365 * 24 * 3600
_BLOCK = 1 << 22  # user × item scores drawn per chunk, to bound memory on large requests


def make_synthetic(
    n_users: int = 2000,
    n_items: int = 1000,
    n_clusters: int = 10,
    *,
    interactions_per_user: int = 25,
    min_per_user: int = 5,
    affinity: float = 4.0,
    popularity_exponent: float = 0.8,
    seed: int = 2021,
) -> pd.DataFrame:
    """Implicit interactions ``user``, ``item``, ``timestamp`` with planted group structure.

    Exactly ``n_users · interactions_per_user`` distinct (user, item) rows; user activity varies
    (at least ``min_per_user`` each, the rest spread by log-normal weights) as in real data.
    ``affinity`` is the log-odds boost of same-group items; ``popularity_exponent`` the Zipf
    exponent of item popularity. Timestamps are uniform over 2020, so temporal splits work too.
    The result is a pure function of the arguments (``seed`` included).
    """
    if min(n_users, n_items, n_clusters, min_per_user) < 1:
        raise ConfigError("n_users, n_items, n_clusters and min_per_user must be positive")
    if not min_per_user <= interactions_per_user <= n_items // 4:
        raise ConfigError(
            f"interactions_per_user must lie in [min_per_user, n_items / 4] "
            f"= [{min_per_user}, {n_items // 4}], not {interactions_per_user}"
        )
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 0.5, n_users)
    extra = rng.multinomial(
        n_users * (interactions_per_user - min_per_user), activity / activity.sum()
    )
    counts = np.minimum(min_per_user + extra, n_items)
    log_popularity = -popularity_exponent * np.log1p(rng.permutation(n_items))
    item_group = np.arange(n_items) % n_clusters
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    block = max(1, _BLOCK // n_items)
    for start in range(0, n_users, block):
        batch = np.arange(start, min(start + block, n_users))
        same = (batch % n_clusters)[:, None] == item_group[None, :]
        scores = log_popularity + affinity * same + rng.gumbel(size=same.shape)
        ranked = np.argsort(-scores, axis=1)
        chosen = np.arange(n_items)[None, :] < counts[batch][:, None]
        users.append(np.repeat(batch, counts[batch]))
        items.append(ranked[chosen])
    user = np.concatenate(users)
    timestamp = _START + rng.integers(0, _YEAR, len(user))
    order = np.argsort(timestamp, kind="stable")
    return pd.DataFrame(
        {
            "user": user[order].astype(np.int64),
            "item": np.concatenate(items)[order].astype(np.int64),
            "timestamp": timestamp[order].astype(np.int64),
        }
    )


# ---- logs at scale -------------------------------------------------------------------------------
#: Rows generated (and written as one Parquet row group) at a time by :func:`synthetic_log`:
#: about 160 MB of int32 ids and int64 timestamps, whatever the size of the log.
LOG_CHUNK = 10_000_000


def synthetic_log(
    n_interactions: int,
    n_users: int | None = None,
    n_items: int | None = None,
    n_clusters: int = 100,
    *,
    same_group: float = 0.8,
    popularity_exponent: float = 0.8,
    activity_sigma: float = 1.0,
    seed: int = 2021,
    chunk: int = LOG_CHUNK,
) -> Iterator[pd.DataFrame]:
    """An interaction log of ``n_interactions`` rows ``user`` (int32), ``item`` (int32) and
    ``timestamp`` (int64, 2020), generated ``chunk`` rows at a time: the benchmark data of
    docs/scaling.md, up to hundreds of millions of rows in bounded memory.

    :func:`make_synthetic` draws each user's items without replacement from a dense
    (users × items) score matrix, which is out of reach at this scale; here every row is drawn
    on its own, with the same planted structure: users and items belong to group
    ``id % n_clusters``; a row's user follows log-normal activity weights; with probability
    ``same_group`` its item comes from the user's group, otherwise from all items, in both cases
    by a Zipf law of exponent ``popularity_exponent`` over a random item order. A user can meet
    an item twice (a re-interaction, as in real logs; the pipeline collapses it). Defaults: 50
    rows per user and 20 per item. The chunks are a pure function of the arguments.
    """
    n_users = n_users or max(1, n_interactions // 50)
    n_items = n_items or max(n_clusters, n_interactions // 20)
    if min(n_interactions, n_users, n_items, n_clusters, chunk) < 1:
        raise ConfigError("the log's interactions, users, items, groups and chunk must be >= 1")
    if max(n_users, n_items) > np.iinfo(np.int32).max:
        raise ConfigError("users and items must fit in int32 (2,147,483,647)")
    if n_clusters > n_items or not 0.0 <= same_group <= 1.0:
        raise ConfigError("need n_clusters <= n_items and same_group in [0, 1]")
    rng = np.random.default_rng(seed)
    activity = np.cumsum(rng.lognormal(0.0, activity_sigma, n_users))
    activity /= activity[-1]
    popularity = rng.permutation(n_items)  # item -> popularity rank
    # The items of each group, most popular first, and one Zipf CDF per group size.
    by_rank = np.argsort(popularity, kind="stable")
    groups = by_rank % n_clusters
    members = by_rank[np.argsort(groups, kind="stable")].astype(np.int32)
    group_start = np.searchsorted(groups[np.argsort(groups, kind="stable")], np.arange(n_clusters))
    group_size = np.diff(np.append(group_start, n_items))
    zipf = np.cumsum(np.arange(1, n_items + 1, dtype=np.float64) ** -popularity_exponent)

    def zipf_ranks(sizes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A popularity rank below each size, P(rank r) ∝ (r + 1)^-a (inverse CDF)."""
        return np.minimum(np.searchsorted(zipf, uniform * zipf[sizes - 1]), sizes - 1)

    for start in range(0, n_interactions, chunk):
        size = min(chunk, n_interactions - start)
        users = np.searchsorted(activity, rng.random(size)).astype(np.int32)
        np.minimum(users, n_users - 1, out=users)
        group = users % n_clusters
        inside = rng.random(size) < same_group
        items = np.empty(size, dtype=np.int32)
        ranks = zipf_ranks(group_size[group[inside]], rng.random(int(inside.sum())))
        items[inside] = members[group_start[group[inside]] + ranks]
        outside = ~inside
        ranks = zipf_ranks(np.full(int(outside.sum()), n_items), rng.random(int(outside.sum())))
        items[outside] = by_rank[ranks]
        timestamps = _START + rng.integers(0, _YEAR, size)
        yield pd.DataFrame({"user": users, "item": items, "timestamp": timestamps})


def write_synthetic_log(path: str | Path, n_interactions: int, **options: Any) -> Path:
    """:func:`synthetic_log` streamed into a Parquet file (one row group per chunk), written
    atomically; the memory used is that of one chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hlrm.fileio import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        writer = None
        try:
            for frame in synthetic_log(n_interactions, **options):
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    return path
