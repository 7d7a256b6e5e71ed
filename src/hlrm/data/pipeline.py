"""From a data configuration to a :class:`~hlrm.data.matrix.SplitData`.

``load_split`` runs read → rating threshold → de-duplicate → n-core → re-index → split, the order
of the reference pipeline (section 4 of the models spec). ``DataConfig.resolved()`` fills every
default with the value that will be used, so a run directory can store exactly what was done.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hlrm.data.matrix import SplitData, binary_csr
from hlrm.data.preprocess import apply_threshold, collapse_duplicates, filter_core, reindex
from hlrm.data.readers import (
    FORMATS,
    TABULAR_FORMATS,
    plain_name,
    read_interactions,
    read_titles,
)
from hlrm.data.registry import get_dataset, resolve_files
from hlrm.data.splits import SPLITS, check_fractions, split_interactions
from hlrm.errors import ConfigError, DataError

PARTS = ("train", "valid", "test")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".rating": "diffnet"}
_NAME_FORMATS = {
    "u.data": "movielens",
    "ratings.dat": "movielens",
    "ratings_no_timestamp.dat": "movielens",
    "user_artists.dat": "hetrec",
}
_COLUMN_OPTIONS = ("user_col", "item_col", "rating_col", "timestamp_col", "sep")


@dataclass
class DataConfig:
    """What to load and how to preprocess and split it (``None`` = the dataset's default).

    Exactly one of ``dataset`` (a registered name, see ``hlrm datasets``) and ``path`` (your own
    file, or a directory holding train/test[/valid] files for the ``given`` split) is set.
    ``min_rating = -inf`` means "no threshold". ``fractions`` are (train, valid, test).
    """

    dataset: str | None = None
    path: str | None = None
    format: str | None = None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    timestamp_col: str | None = None
    sep: str | None = None
    min_rating: float | None = None
    user_core: int | None = None
    item_core: int | None = None
    split: str | None = None
    fractions: tuple[float, float, float] = (0.72, 0.08, 0.20)
    seed: int = 2021

    def resolved(self) -> DataConfig:
        """A copy with every default made concrete (idempotent).

        Only the column options that do not apply (or were not given: rating and timestamp
        columns) stay ``None``; they are meant to be left out when the configuration is dumped.
        """
        if (self.dataset is None) == (self.path is None):
            raise ConfigError(
                "set exactly one of dataset (a registered name) and path (your own file)"
            )
        fractions = check_fractions(self.fractions)
        if self.dataset is not None:
            spec = get_dataset(self.dataset)
            if self.format not in (None, spec.format):
                raise ConfigError(
                    f"dataset {spec.name!r} is read as {spec.format!r}; format only applies to "
                    f"your own files (path)"
                )
            fmt, min_rating, split = spec.format, spec.min_rating, spec.split
            user_core, item_core = spec.user_core, spec.item_core
            given_ok = "train" in spec.roles()
        else:
            fmt = self.format or infer_format(self.path)
            if fmt not in FORMATS:
                raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
            min_rating, user_core, item_core = None, 1, 1
            given_ok = Path(self.path).is_dir()
            split = "given" if given_ok else "random"
        split = self.split or split
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split == "given" and not given_ok:
            source = self.dataset or self.path
            raise ConfigError(
                f"split 'given' needs pre-split files, and {source!r} has none (a dataset with "
                f"train/test files, or a directory holding them); use another split"
            )
        tabular = fmt in TABULAR_FORMATS
        if not tabular:
            given = [name for name in _COLUMN_OPTIONS if getattr(self, name) is not None]
            if given:
                raise ConfigError(
                    f"{', '.join(given)} only apply to csv, tsv and parquet data, not to {fmt!r}"
                )
        if fmt == "parquet" and self.sep is not None:
            raise ConfigError("sep does not apply to parquet files")
        return replace(
            self,
            format=fmt,
            user_col=(self.user_col or "user") if tabular else None,
            item_col=(self.item_col or "item") if tabular else None,
            sep=self.sep or {"csv": ",", "tsv": "\t"}.get(fmt),
            min_rating=_first_set(self.min_rating, min_rating, -math.inf),
            user_core=_first_set(self.user_core, user_core),
            item_core=_first_set(self.item_core, item_core),
            split=split,
            fractions=fractions,
        )


def _first_set(*values: object) -> Any:
    return next(v for v in values if v is not None)


def infer_format(path: str | Path) -> str:
    """The format implied by a file's name (or, for a directory, by its train file's name)."""
    path = Path(path)
    target = given_files(path)["train"] if path.is_dir() else path
    name = plain_name(target).lower()
    fmt = _NAME_FORMATS.get(name) or _SUFFIX_FORMATS.get(Path(name).suffix)
    if fmt is None:
        raise ConfigError(
            f"cannot tell the format of {target.name!r} from its name; set format to one of "
            f"{', '.join(FORMATS)}"
        )
    return fmt


def given_files(directory: str | Path) -> dict[str, Path]:
    """Part → file for a directory of pre-split files, recognised by the words ``train``,
    ``test`` and ``val``/``valid``/``validation`` in their names (``train.txt``,
    ``yelp.val.rating``, ``ratings_test.csv``, …; compressed copies count)."""
    directory = Path(directory)
    words = {"train": {"train"}, "valid": {"val", "valid", "validation"}, "test": {"test"}}
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        tokens = set(re.split(r"[._\-]", plain_name(path).lower()))
        for part, names in words.items():
            if tokens & names:
                if part in found:
                    raise ConfigError(
                        f"{directory}: both {found[part].name!r} and {path.name!r} look like "
                        f"the {part} file"
                    )
                found[part] = path
    if "train" not in found or "test" not in found:
        raise DataError(
            f"{directory}: expected a train and a test file (names containing 'train' and "
            f"'test'), found {sorted(p.name for p in directory.iterdir())}"
        )
    return found


def load_split(config: DataConfig) -> SplitData:
    """Read, preprocess and split the data ``config`` names (resolving defaults first)."""
    cfg = config.resolved()
    frame, name, titles = _read(cfg)
    if cfg.split != "given" and "part" in frame:
        frame = frame.drop(columns="part")
    frame = apply_threshold(frame, cfg.min_rating)
    frame = collapse_duplicates(frame)
    frame = filter_core(frame, cfg.user_core, cfg.item_core)
    frame, user_ids, item_ids = reindex(frame)
    parts = split_interactions(frame, cfg.split, fractions=cfg.fractions, seed=cfg.seed)
    users = frame["user"].to_numpy()
    items = frame["item"].to_numpy()
    shape = (len(user_ids), len(item_ids))
    matrices = {
        part: binary_csr(users[rows], items[rows], shape)
        for part, rows in zip(PARTS, parts, strict=True)
    }
    item_titles = None
    if titles is not None:
        item_titles = np.array([titles.get(i, "") for i in item_ids.tolist()], dtype=str)
    return SplitData(
        **matrices, user_ids=user_ids, item_ids=item_ids, name=name, item_titles=item_titles
    )


def _read(cfg: DataConfig) -> tuple[pd.DataFrame, str, dict[object, str] | None]:
    """(interactions, display name, item titles or None); pre-split data gets a ``part``."""
    if cfg.dataset is not None:
        spec = get_dataset(cfg.dataset)
        if spec.generate is not None:
            return spec.generate(cfg.seed), spec.name, None
        paths = resolve_files(spec)
        if "ratings" in paths:
            frame = read_interactions(paths["ratings"], spec.format)
        else:
            frame = _read_parts({p: paths[p] for p in PARTS if p in paths}, spec.format, {})
        titles = read_titles(paths["titles"]) if "titles" in paths else None
        return frame, spec.name, titles
    options = {name: getattr(cfg, name) for name in _COLUMN_OPTIONS}
    if cfg.format == "parquet":
        options.pop("sep")
    path = Path(cfg.path)
    if path.is_dir():
        return _read_parts(given_files(path), cfg.format, options), path.name, None
    return read_interactions(path, cfg.format, **options), Path(plain_name(path)).stem, None


def _read_parts(paths: dict[str, Path], fmt: str, options: dict) -> pd.DataFrame:
    """Concatenate pre-split files train first, so a pair in two parts stays in train."""
    frames = [
        read_interactions(paths[p], fmt, **options).assign(part=p) for p in PARTS if p in paths
    ]
    return pd.concat(frames, ignore_index=True)


def describe(split: SplitData) -> dict[str, object]:
    """Statistics of a split after preprocessing: sizes, density, per-part counts and the users
    and items a model meets cold (test users without training items, items never trained on)."""
    train_counts = np.diff(split.train.indptr)
    valid_counts = np.diff(split.valid.indptr)
    test_counts = np.diff(split.test.indptr)
    per_user = train_counts + valid_counts + test_counts
    stats = dict(split.stats())
    stats.update(
        train_users=int((train_counts > 0).sum()),
        valid_users=int((valid_counts > 0).sum()),
        test_users_without_train=int(((test_counts > 0) & (train_counts == 0)).sum()),
        items_without_train=int((split.item_popularity == 0).sum()),
        interactions_per_user_mean=float(per_user.mean()),
        interactions_per_user_median=float(np.median(per_user)),
        interactions_per_item_mean=float(per_user.sum() / split.n_items),
        has_titles=split.item_titles is not None,
    )
    return stats


#: Below these, the default training recipe is outside the data it was measured on (every
#: development dataset is 5- or 10-core: a median of 20+ training items per user).
SPARSE_MEDIAN_TRAIN_ITEMS = 5
SPARSE_COLD_SHARE = 0.2


def data_notes(split: SplitData) -> list[str]:
    """Warnings about data on which a model's defaults are likely poor, one sentence each."""
    train_counts = np.diff(split.train.indptr)
    test_counts = np.diff(split.test.indptr)
    notes = []
    median = float(np.median(train_counts)) if len(train_counts) else 0.0
    if median < SPARSE_MEDIAN_TRAIN_ITEMS:
        notes.append(
            f"very sparse data: the median user has {median:g} training items; the defaults were "
            f"measured on 5- and 10-core data, so filter rare users and items (--core 5) or "
            f"search the options on validation (--tune 10)"
        )
    tested = test_counts > 0
    cold = float(((train_counts == 0) & tested).sum() / max(1, tested.sum()))
    if cold > SPARSE_COLD_SHARE:
        notes.append(
            f"{cold:.0%} of the test users have no training items: no collaborative model can "
            f"rank for them better than popularity (--core filters them out)"
        )
    return notes
