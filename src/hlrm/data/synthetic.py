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
