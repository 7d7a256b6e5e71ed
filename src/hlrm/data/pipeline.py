"""From a data configuration to a :class:`~hlrm.data.matrix.SplitData`.

``load_split`` runs read → rating threshold → de-duplicate → n-core → re-index → split, the order
of the reference pipeline (section 4 of the models spec). ``DataConfig.resolved()`` fills every
default with the value that will be used, so a run directory can store exactly what was done.
"""

from __future__ import annotations

import hashlib
import math
import os
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
    check_regular_file,
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
#: The ``format`` of data given in memory (a DataFrame or a SciPy matrix, through the estimator
#: API) rather than read from a file: a run's configuration records the preprocessing, but the
#: data cannot be read again from it.
IN_MEMORY = "dataframe"


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
        if self.format == IN_MEMORY and self.dataset is None and self.path is None:
            return self._resolved_in_memory()
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
            path = None
            fmt, min_rating, split = spec.format, spec.min_rating, spec.split
            user_core, item_core = spec.user_core, spec.item_core
            given_ok = "train" in spec.roles()
        else:
            # Absolute, so that a stored configuration (a run's config.toml, commands.sh)
            # works from any directory.
            path = os.path.abspath(os.path.expanduser(self.path))
            fmt = self.format or infer_format(path)
            if fmt not in FORMATS:
                raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
            min_rating, user_core, item_core = None, 1, 1
            given_ok = Path(path).is_dir()
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
            path=path,
            format=fmt,
            # Unset columns are found by their common names when the file is read (readers).
            user_col=self.user_col if tabular else None,
            item_col=self.item_col if tabular else None,
            sep=self.sep or {"csv": ",", "tsv": "\t"}.get(fmt),
            min_rating=_first_set(self.min_rating, min_rating, -math.inf),
            user_core=_first_set(self.user_core, user_core),
            item_core=_first_set(self.item_core, item_core),
            split=split,
            fractions=fractions,
        )

    def _resolved_in_memory(self) -> DataConfig:
        """The defaults of data given in memory: those of your own files (no threshold, no core
        filter, a random split)."""
        split = self.split or "random"
        if split not in SPLITS or split == "given":
            choices = ", ".join(s for s in SPLITS if s != "given")
            raise ConfigError(f"split must be one of {choices} for data in memory, not {split!r}")
        return replace(
            self,
            min_rating=_first_set(self.min_rating, -math.inf),
            user_core=_first_set(self.user_core, 1),
            item_core=_first_set(self.item_core, 1),
            split=split,
            fractions=check_fractions(self.fractions),
        )


def data_checksums(config: DataConfig) -> dict[str, str]:
    """SHA-256 of every file of your own data (``path``: a file, or the train/valid/test files
    of a directory), keyed by absolute path, so a run can tell that its data changed. A
    registered dataset gives ``{}``: its files are verified against pinned checksums already."""
    if config.path is None:
        return {}
    path = Path(config.path)
    files = sorted(given_files(path).values()) if path.is_dir() else [path]
    sums = {}
    for file in files:
        check_regular_file(file)
        digest = hashlib.sha256()
        try:
            with file.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        except OSError as exc:
            raise DataError(f"{file}: cannot read it ({exc.strerror or exc})") from None
        sums[os.path.abspath(file)] = digest.hexdigest()
    return sums


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


@dataclass(frozen=True)
class PreprocessingStep:
    """What one step of :func:`load_split` did, in numbers and in one sentence (``str``).

    ``rows_*`` count interactions; ``users_removed`` / ``items_removed`` are the users and
    items the step left without any interaction."""

    step: str  # "read", "rating threshold", "duplicates", "core filter" or "split"
    rows_before: int
    rows_after: int
    users_removed: int
    items_removed: int
    summary: str

    def __str__(self) -> str:
        return self.summary

    @property
    def rows_removed(self) -> int:
        return self.rows_before - self.rows_after


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" if n == 1 else f"{n:,} {what}s"


def _sizes(frame: pd.DataFrame) -> tuple[int, int, int]:
    """(rows, distinct users, distinct items)."""
    return len(frame), int(frame["user"].nunique()), int(frame["item"].nunique())


def _preprocess(
    cfg: DataConfig, frame: pd.DataFrame, source: str
) -> tuple[pd.DataFrame, list[PreprocessingStep]]:
    """Threshold → de-duplicate → n-core, with one :class:`PreprocessingStep` per step."""
    rows, users, items = _sizes(frame)
    columns = frame.attrs.get("columns")
    used = "" if not columns else " (" + ", ".join(f"{r}: {c!r}" for r, c in columns.items()) + ")"
    steps = [
        PreprocessingStep(
            "read", rows, rows, 0, 0,
            f"read {_count(rows, 'row')} from {source}{used}: {_count(users, 'user')}, "
            f"{_count(items, 'item')}",
        )
    ]  # fmt: skip

    def filtered(step: str, kept: pd.DataFrame, rule: str) -> PreprocessingStep:
        nonlocal rows, users, items
        after = _sizes(kept)
        lost_users, lost_items = users - after[1], items - after[2]
        dropped = rows - after[0]
        summary = (
            f"{step} ({rule}): dropped {dropped:,} of {rows:,} rows ({dropped / rows:.1%}), "
            f"{_count(lost_users, 'user')} and {_count(lost_items, 'item')}"
        )
        result = PreprocessingStep(step, rows, after[0], lost_users, lost_items, summary)
        rows, users, items = after
        return result

    if cfg.min_rating is None or cfg.min_rating == -math.inf:
        steps.append(
            PreprocessingStep("rating threshold", rows, rows, 0, 0, "rating threshold: none")
        )
    else:
        frame = apply_threshold(frame, cfg.min_rating)
        steps.append(filtered("rating threshold", frame, f"rating >= {cfg.min_rating:g}"))

    kept = collapse_duplicates(frame)  # the same users and items, fewer rows
    duplicates = rows - len(kept)
    summary = (
        f"duplicates: collapsed {_count(duplicates, 'repeated (user, item) row')} into the "
        f"pair's first row ({len(kept):,} rows left)"
        if duplicates
        else "duplicates: none"
    )
    steps.append(PreprocessingStep("duplicates", rows, len(kept), 0, 0, summary))
    frame, rows = kept, len(kept)

    if cfg.user_core <= 1 and cfg.item_core <= 1:
        steps.append(PreprocessingStep("core filter", rows, rows, 0, 0, "core filter: none"))
    else:
        frame = filter_core(frame, cfg.user_core, cfg.item_core)
        rule = f"every user >= {cfg.user_core} and every item >= {cfg.item_core} interactions"
        steps.append(filtered("core filter", frame, rule))
    return frame, steps


def load_split(config: DataConfig) -> SplitData:
    """Read, preprocess and split the data ``config`` names (resolving defaults first).

    ``split.preprocessing`` lists what each step did (:class:`PreprocessingStep`)."""
    cfg = config.resolved()
    if cfg.format == IN_MEMORY:
        raise ConfigError(
            "this configuration describes data that was given in memory (a DataFrame): it "
            "cannot be read again; train from a file (path) or a dataset instead"
        )
    frame, name, titles = _read(cfg)
    if cfg.split != "given" and "part" in frame:
        frame = frame.drop(columns="part")
    return split_frame(frame, cfg, name, titles, source=cfg.dataset or str(cfg.path))


def split_frame(
    frame: pd.DataFrame,
    config: DataConfig,
    name: str = "dataframe",
    titles: dict[object, str] | None = None,
    source: str = "a DataFrame",
) -> SplitData:
    """Preprocess and split interactions already in memory: columns ``user`` and ``item`` (any
    ids), optional ``rating`` and ``timestamp`` (and ``part`` for the ``given`` split), as the
    readers return them. The steps of :func:`load_split` after reading, with ``config``'s
    threshold, cores, split and fractions; ``titles`` maps original item ids to titles,
    ``source`` names the data in the preprocessing summary."""
    cfg = config.resolved()
    frame, steps = _preprocess(cfg, frame, source)
    frame, user_ids, item_ids = reindex(frame)
    parts = split_interactions(frame, cfg.split, fractions=cfg.fractions, seed=cfg.seed)
    sizes = [len(rows) for rows in parts]
    steps.append(
        PreprocessingStep(
            "split",
            len(frame),
            sum(sizes),
            0,
            0,
            f"split {cfg.split!r}: {sizes[0]:,} train, {sizes[1]:,} validation, {sizes[2]:,} test "
            f"rows over {_count(len(user_ids), 'user')} and {_count(len(item_ids), 'item')}",
        )
    )
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
    split = SplitData(
        **matrices, user_ids=user_ids, item_ids=item_ids, name=name, item_titles=item_titles
    )
    split.preprocessing = steps
    return split


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
