"""Estimators in the conventions of scikit-learn and ``implicit``: fit on a DataFrame or a SciPy
matrix, recommend, save, load.

::

    import hlrm

    model = hlrm.HLR(dim=64, epochs=30)
    model.fit(ratings)                    # a DataFrame with user and item columns
    model.recommend(["u1", "u2"], k=10)   # a DataFrame: user_id, rank, item_id, score[, title]
    model.save("runs/hlr")                # a run directory; hlrm.load("runs/hlr") reads it back

A thin layer: fitting is :func:`hlrm.runs.train` on a split made by
:func:`hlrm.data.pipeline.split_frame`, and every query is a function of :mod:`hlrm.runs`, so an
estimator and the command line give the same results for the same run. One class per registered
model (:class:`CML`, :class:`LRML`, :class:`HLR`, :class:`HLRPlusPlus`, …) or the generic
``Estimator("hlr", ...)``.

Results are pandas DataFrames with one row per (query, rank), in the caller's id types, because
ids are whatever the data held (strings, integers): unlike ``implicit``, which returns arrays of
internal indices, nothing needs mapping back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hlrm import runs
from hlrm.config import ModelConfig, RunConfig
from hlrm.data.pipeline import IN_MEMORY, DataConfig, split_frame
from hlrm.data.readers import choose_columns
from hlrm.errors import ConfigError, DataError
from hlrm.models.base import MODELS, canonical_name, model_parameters
from hlrm.training.trainer import LOSS_SELECTION, TrainConfig

log = logging.getLogger("hlrm")

#: Options of the estimator itself, beside the model's and the trainer's.
ESTIMATOR_OPTIONS: dict[str, Any] = {"validation": 0.1, "seed": 2021, "progress": True}
TRAIN_OPTIONS = tuple(field.name for field in dataclasses.fields(TrainConfig))


class Estimator:
    """A recommender to ``fit`` on interactions and query by original ids.

    Options (all keyword, see :meth:`get_params` for every one with its current value):

    * the model's hyper-parameters (``dim``, ``n_slots``, ``history_size``, …;
      ``hlrm.models.model_parameters(name)``);
    * training options of :class:`hlrm.training.trainer.TrainConfig` (``epochs``, ``lr``,
      ``batch_size``, ``negatives``, ``patience``, ``select_by``, ``device``, …), by default
      the library's recipe for this model;
    * ``validation`` (default 0.1): the share of interactions held out, at random, to choose the
      number of epochs (the best validation ``select_by``, NDCG@10 by default, with early
      stopping); the model is then refit on every interaction for that many epochs, like
      ``hlrm train --final``, so a fit trains twice. ``validation=0`` trains the configured
      ``epochs`` once on everything, without selection;
    * ``seed`` (split, initialisation, sampling) and ``progress`` (progress bars).
    """

    #: The registered model of a named subclass (None: given to the constructor).
    model_name: ClassVar[str | None] = None

    def __init__(self, model: str | None = None, **params: Any) -> None:
        if model is None and self.model_name is None:
            raise ConfigError('name a model: hlrm.Estimator("hlr", ...) or hlrm.HLR(...)')
        name = canonical_name(model or self.model_name)
        if self.model_name is not None and name != self.model_name:
            raise ConfigError(f"{type(self).__name__} is model {self.model_name!r}, not {name!r}")
        self._model = name
        self._params: dict[str, Any] = {}
        self.set_params(**params)
        #: The fitted :class:`hlrm.runs.Run` (None before ``fit``).
        self.run_: runs.Run | None = None

    # ---- scikit-learn conventions --------------------------------------------------------------
    def _defaults(self) -> dict[str, Any]:
        train = TrainConfig().for_model(MODELS[self._model])
        return {
            **model_parameters(self._model),
            **dataclasses.asdict(train),
            **ESTIMATOR_OPTIONS,
        }

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every option with its current value (``deep`` is accepted for scikit-learn)."""
        params = {**self._defaults(), **self._params}
        if self.model_name is None:
            params = {"model": self._model, **params}
        return params

    def set_params(self, **params: Any) -> Estimator:
        """Change options; unknown names are a :class:`~hlrm.errors.ConfigError`. Returns self.
        A fitted model keeps its weights until the next ``fit``."""
        params = dict(params)
        if "model" in params and canonical_name(params.pop("model")) != self._model:
            raise ConfigError("the model of an estimator cannot change; make a new one")
        known = self._defaults()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(
                f"{self._model} has no option(s) {', '.join(unknown)}; its options are: "
                f"{', '.join(sorted(known))}"
            )
        validation = params.get("validation", 0.0)
        if not (isinstance(validation, (int, float)) and 0 <= validation < 1):
            raise ConfigError(f"validation must be a share in [0, 1), not {validation!r}")
        self._params.update(params)
        return self

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={value!r}" for key, value in self._params.items())
        if self.model_name is None:
            shown = ", ".join(filter(None, [repr(self._model), shown]))
        return f"{type(self).__name__}({shown})"

    # ---- fitting --------------------------------------------------------------------------------
    def fit(
        self,
        interactions: pd.DataFrame | sp.spmatrix,
        *,
        user_col: str | None = None,
        item_col: str | None = None,
        rating_col: str | None = None,
        timestamp_col: str | None = None,
        min_rating: float | None = None,
        user_ids: Sequence[object] | None = None,
        item_ids: Sequence[object] | None = None,
        item_titles: Mapping[object, str] | pd.Series | None = None,
    ) -> Estimator:
        """Fit on ``interactions``; returns self.

        A DataFrame has one row per interaction. Its user and item columns are those named, or
        else found by the common names files are read by
        (:data:`hlrm.data.readers.COLUMN_NAMES`: ``user``/``user_id``/``userId``, …); a rating
        column enables ``min_rating`` (keep rows with rating >= it) and a timestamp column is
        kept. Ids may be strings or integers. A SciPy
        sparse matrix has users as rows and items as columns, every stored non-zero an
        interaction (its value the rating), with ``user_ids``/``item_ids`` naming rows and
        columns (default: their positions). ``item_titles`` maps item ids to display titles.
        Repeated (user, item) pairs count once. The split, the epoch choice and the refit are
        those of the class docstring.
        """
        frame, columns = _interaction_frame(
            interactions, user_col, item_col, rating_col, timestamp_col, user_ids, item_ids
        )
        params = self.get_params()
        validation = float(params["validation"])
        fractions = (1.0 - validation, validation, 0.0)
        data = DataConfig(
            format=IN_MEMORY,
            user_col=columns.get("user"),
            item_col=columns.get("item"),
            rating_col=columns.get("rating"),
            timestamp_col=columns.get("timestamp"),
            min_rating=min_rating,
            split="random",
            fractions=fractions,
            seed=int(params["seed"]),
        )
        train = TrainConfig(**{key: params[key] for key in TRAIN_OPTIONS})
        if validation == 0:
            # Nothing to select on: the configured epochs, the last one kept.
            if "select_by" in self._params and params["select_by"] != LOSS_SELECTION:
                raise ConfigError("select_by needs a validation share: set validation > 0")
            train = dataclasses.replace(train, select_by=LOSS_SELECTION, patience=0)
        model_params = {key: params[key] for key in model_parameters(self._model)}
        config = RunConfig(
            seed=int(params["seed"]),
            data=data,
            model=ModelConfig(self._model, model_params),
            train=train,
            final=validation > 0,
        )
        titles = None if item_titles is None else {str(k): str(v) for k, v in item_titles.items()}
        split = split_frame(frame, config.data, name="dataframe", titles=titles)
        if titles is not None:
            split = _titles_by_text(split, titles)
        self.run_ = runs.train(
            config, None, split=split, progress=bool(params["progress"]), log=_log_line
        )
        return self

    # ---- queries --------------------------------------------------------------------------------
    def _run(self) -> runs.Run:
        if self.run_ is None:
            raise ConfigError(f"{self!r} is not fitted yet: call fit() first (or hlrm.load)")
        return self.run_

    def recommend(
        self,
        user_ids: object | Sequence[object],
        k: int = 10,
        *,
        filter_already_liked: bool = True,
    ) -> pd.DataFrame:
        """The top ``k`` items for one known user or many (scored in batches on the model's
        device): a DataFrame with columns ``user_id``, ``rank`` (1 = best), ``item_id``,
        ``score`` (higher is better; comparable within a model) and ``title`` where titles are
        known, users in the order given (:func:`hlrm.runs.recommend_table`, the table ``hlrm
        recommend --users`` writes). ``filter_already_liked`` never recommends an item the user
        has anywhere in the fitted data. An unknown user is an
        :class:`~hlrm.errors.UnknownIdError`."""
        users = _as_list(user_ids)
        return runs.recommend_table(self._run(), users, k, filter_seen=filter_already_liked)

    def recommend_items(self, items: Sequence[object], k: int = 10) -> pd.DataFrame:
        """The top ``k`` items for a new user who has ``items`` (known item ids): the user is
        folded into the fitted model (:mod:`hlrm.training.foldin`; the model is not changed) and
        never gets the given items back. Columns ``rank``, ``item_id``, ``score`` [, ``title``]."""
        run = self._run()
        recs = runs.recommend(run, items=_as_list(items), k=k)
        rows = [(rec.rank, run.split.item_ids[rec.item], rec.score, rec.title) for rec in recs]
        return _frame(rows, ["rank", "item_id", "score", "title"], run)

    def similar_items(self, item_ids: object | Sequence[object], k: int = 10) -> pd.DataFrame:
        """The ``k`` items most similar to each of ``item_ids``, by the model's own item-item
        similarity (:func:`hlrm.runs.similar_items`); an item is never its own neighbour.
        Columns ``item_id``, ``rank``, ``similar_item_id``, ``score`` [, ``title`` of the
        similar item]."""
        run = self._run()
        items = _as_list(item_ids)
        lists = runs.similar_items(run, items, k)
        rows = [
            (item, rec.rank, run.split.item_ids[rec.item], rec.score, rec.title)
            for item, recs in zip(items, lists, strict=True)
            for rec in recs
        ]
        return _frame(rows, ["item_id", "rank", "similar_item_id", "score", "title"], run)

    def explain(self, user_id: object, item_id: object) -> pd.DataFrame:
        """What led the model to score ``item_id`` as it does for ``user_id``: one row per
        attention entry (``module``, ``rank``, ``item`` or special ``slot``, ``title``,
        ``weight``), heaviest first, from the history pool the model ranks with. Models without
        an explanation raise :class:`~hlrm.errors.ConfigError`."""
        run = self._run()
        explanation = runs.explain(run, user_id, [item_id])[0]
        rows = []
        for module, entries in explanation.items():
            for rank, entry in enumerate(entries, start=1):
                rows.append({"module": module, "rank": rank, **entry})
        return pd.DataFrame(rows)

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model as a run directory (``hlrm recommend``/``evaluate`` read it,
        :func:`load` makes an estimator of it again); ``path`` must be new or empty."""
        return runs.save(self._run(), path)


def _log_line(line: str) -> None:
    """Training's notes about the data are warnings (shown by default), the rest information."""
    (log.warning if line.startswith("note:") else log.info)(line)


def load(path: str | Path, device: str = "cpu") -> Estimator:
    """An estimator of the run directory ``path`` (saved by :meth:`Estimator.save` or written by
    ``hlrm train``), its weights loaded with ``weights_only=True`` onto ``device``."""
    run = runs.Run.open(path, device)
    config = run.config
    params: dict[str, Any] = {**config.model.params}
    params.update({key: getattr(config.train, key) for key in TRAIN_OPTIONS})
    params.update(validation=config.data.fractions[1], seed=config.seed)
    estimator = ESTIMATORS[run.model.name](**params)
    estimator.run_ = run
    return estimator


# ---- input -------------------------------------------------------------------------------------
def _interaction_frame(
    interactions: object,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    timestamp_col: str | None,
    user_ids: Sequence[object] | None,
    item_ids: Sequence[object] | None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The frame the readers produce (``user``, ``item`` [, ``rating``, ``timestamp``]) from a
    DataFrame or a SciPy sparse matrix, and the DataFrame column each role was read from."""
    if sp.issparse(interactions):
        if any(c is not None for c in (user_col, item_col, rating_col, timestamp_col)):
            raise ConfigError("column names apply to DataFrames, not to a sparse matrix")
        return _matrix_frame(interactions, user_ids, item_ids), {}
    if not isinstance(interactions, pd.DataFrame):
        raise ConfigError(
            "fit expects a pandas DataFrame or a SciPy sparse matrix, not "
            f"{type(interactions).__name__}"
        )
    if user_ids is not None or item_ids is not None:
        raise ConfigError("user_ids and item_ids name the rows and columns of a sparse matrix")
    given = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    present = [str(column) for column in interactions.columns]
    chosen = choose_columns("the DataFrame", given, present)  # the readers' rule for files
    columns = dict(zip(present, interactions.columns, strict=True))
    frame = pd.DataFrame(
        {role: interactions[columns[column]].to_numpy() for role, column in chosen.items()}
    )
    if frame.empty:
        raise DataError("the DataFrame has no rows")
    for role in ("user", "item"):
        if frame[role].isna().any():
            raise DataError(f"the {role} column {chosen[role]!r} has missing values")
    if "rating" in frame:
        ratings = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(ratings).all():
            raise DataError(f"the rating column {chosen['rating']!r} has non-numeric values")
        frame["rating"] = ratings
    if "timestamp" in frame:
        frame["timestamp"] = _seconds(frame["timestamp"], chosen["timestamp"])
    return frame, chosen


def _seconds(values: pd.Series, column: str) -> np.ndarray:
    """Timestamps as int64 seconds: datetimes are converted, numbers taken as seconds."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return (values.astype("datetime64[s]").astype("int64")).to_numpy()
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(numbers).all():
        raise DataError(f"the timestamp column {column!r} holds values that are not times")
    return numbers.astype(np.int64)


def _matrix_frame(
    matrix: sp.spmatrix, user_ids: Sequence[object] | None, item_ids: Sequence[object] | None
) -> pd.DataFrame:
    coo = sp.coo_matrix(matrix)
    coo.sum_duplicates()
    keep = coo.data != 0
    rows, cols, values = coo.row[keep], coo.col[keep], coo.data[keep]
    if not len(rows):
        raise DataError("the matrix has no stored non-zero entries: nothing to learn from")
    users = _id_array(user_ids, coo.shape[0], "user_ids", "rows")
    items = _id_array(item_ids, coo.shape[1], "item_ids", "columns")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError("the matrix holds NaN or infinite values")
    return pd.DataFrame({"user": users[rows], "item": items[cols], "rating": values})


def _id_array(ids: Sequence[object] | None, size: int, name: str, axis: str) -> np.ndarray:
    if ids is None:
        return np.arange(size)
    ids = np.asarray(ids)
    if ids.shape != (size,):
        raise ConfigError(f"{name} has {ids.size} ids for the matrix's {size} {axis}")
    if len(pd.unique(ids)) != size:
        raise ConfigError(f"{name} repeats an id")
    return ids


def _titles_by_text(split: Any, titles: dict[str, str]) -> Any:
    """Titles looked up by the ids' text, so integer ids find titles keyed by int or str."""
    texts = np.array([titles.get(str(item), "") for item in split.item_ids.tolist()], dtype=str)
    return dataclasses.replace(split, item_titles=texts)


def _as_list(ids: object) -> list[object]:
    """One id or many: strings, bytes and scalars are one id."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        return [ids]
    return list(ids.tolist() if isinstance(ids, (np.ndarray, pd.Series, pd.Index)) else ids)


def _frame(rows: list[tuple], columns: list[str], run: runs.Run) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    if run.split.item_titles is None:
        frame = frame.drop(columns="title")
    frame["score"] = frame["score"].astype(np.float64)
    return frame


# ---- one class per model -----------------------------------------------------------------------
class CML(Estimator):
    """Collaborative metric learning (:class:`hlrm.models.cml.CML`)."""

    model_name = "cml"


class LRML(Estimator):
    """Latent relational metric learning (:class:`hlrm.models.lrml.LRML`)."""

    model_name = "lrml"


class HLR(Estimator):
    """Hierarchical latent relations (:class:`hlrm.models.hlr.HLR`)."""

    model_name = "hlr"


class HLRPlusPlus(Estimator):
    """HLR++ (:class:`hlrm.models.hlr.HLRPlusPlus`)."""

    model_name = "hlr++"


class CMLEASE(Estimator):
    """CML plus EASE's item-item term weighted on validation (:mod:`hlrm.models.hybrid`)."""

    model_name = "cml-ease"


class HLREASE(Estimator):
    """HLR plus EASE's item-item term weighted on validation (:mod:`hlrm.models.hybrid`)."""

    model_name = "hlr-ease"


class HLRPlusPlusEASE(Estimator):
    """HLR++ plus EASE's item-item term weighted on validation (:mod:`hlrm.models.hybrid`)."""

    model_name = "hlr++-ease"


class TransCF(Estimator):
    """Translation-based collaborative filtering (:class:`hlrm.models.transcf.TransCF`)."""

    model_name = "transcf"


class AdaCML(Estimator):
    """Adaptive collaborative metric learning (:class:`hlrm.models.adacml.AdaCML`)."""

    model_name = "adacml"


class BPR(Estimator):
    """BPR matrix factorisation (:class:`hlrm.models.bpr.BPR`)."""

    model_name = "bpr"


class ALS(Estimator):
    """Implicit ALS through the ``implicit`` library (:class:`hlrm.models.als.ALS`)."""

    model_name = "als"


class ItemKNN(Estimator):
    """Item-based kNN, cosine (:class:`hlrm.models.neighbors.ItemKNN`)."""

    model_name = "itemknn"


class EASE(Estimator):
    """EASE^R (:class:`hlrm.models.neighbors.EASE`)."""

    model_name = "ease"


class Popularity(Estimator):
    """Most popular items (:class:`hlrm.models.popularity.Popularity`)."""

    model_name = "popularity"


#: Registered model name → its estimator class.
ESTIMATORS: dict[str, type[Estimator]] = {
    cls.model_name: cls
    for cls in (
        CML, LRML, HLR, HLRPlusPlus, CMLEASE, HLREASE, HLRPlusPlusEASE, TransCF, AdaCML, BPR, ALS,
        ItemKNN, EASE, Popularity,
    )
}  # fmt: skip
_UNCOVERED = sorted(set(MODELS) - set(ESTIMATORS))
if _UNCOVERED:  # pragma: no cover - a new model needs its class here
    raise RuntimeError(f"models without an estimator class: {_UNCOVERED}")

__all__ = ["ESTIMATORS", "Estimator", "load", *(cls.__name__ for cls in ESTIMATORS.values())]
