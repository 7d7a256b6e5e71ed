"""The contract every recommender follows, and the registry that builds them by name.

A model maps users (and, for history-based models, a padded pool of each user's past items) to a
score for every item, higher meaning more relevant. Metric-learning models also expose the squared
distances the hinge loss needs; the trainer, the sampler and the evaluator only talk to this API.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import scipy.sparse as sp
import torch
from torch import Tensor, nn

from hlrm.errors import ConfigError


class History(NamedTuple):
    """A padded pool of past items per row: ``items`` (R, P) int64 with pad index ``n_items`` and
    ``mask`` (R, P) bool, True on real entries. P may be 0."""

    items: Tensor
    mask: Tensor

    def to(self, device: torch.device | str) -> History:
        return History(self.items.to(device), self.mask.to(device))


def pool_rows(history: History | None, rows: slice | Tensor) -> History | None:
    """The pools of some rows (a slice or an index tensor) of ``history``; None stays None."""
    return None if history is None else History(history.items[rows], history.mask[rows])


@dataclass
class TrainBatch:
    """One training batch: B (user, positive) pairs, k negatives each, optional history pools.

    ``shared``: every row has the same k negatives (``negatives`` is then a (B, k) expanded view
    of one row), so models can score them with one GEMM instead of gathering B·k rows.
    ``negative_log_weights`` (B, k): each negative's log weight in the loss (see
    :mod:`hlrm.training.losses`), None when all are 0.
    """

    users: Tensor  # (B,)
    positives: Tensor  # (B,)
    negatives: Tensor  # (B, k)
    history: History | None = None  # the user's items with the positive removed
    shared: bool = False
    negative_log_weights: Tensor | None = None

    def to(self, device: torch.device | str) -> TrainBatch:
        return TrainBatch(
            self.users.to(device),
            self.positives.to(device),
            self.negatives.to(device),
            None if self.history is None else self.history.to(device),
            self.shared,
            None if self.negative_log_weights is None else self.negative_log_weights.to(device),
        )


class Objective(nn.Module):
    """Turns distances into the scalar loss; implemented in :mod:`hlrm.training.losses`."""

    def terms(
        self,
        positive_distance: Tensor,
        negative_distance: Tensor,
        log_weights: Tensor | None = None,
    ) -> Tensor:
        """Per-row (or per-triplet) loss terms from distances (B,) and (B, k)."""
        raise NotImplementedError

    def reduce(self, terms: Tensor) -> Tensor:
        raise NotImplementedError


def normal_init_(tensor: Tensor, dim: int) -> Tensor:
    """Normal(0, 1/sqrt(d)), the official init for embeddings, keys and memories (norms ≈ 1)."""
    with torch.no_grad():
        return tensor.normal_(0.0, dim**-0.5)


def project_rows_(weight: Tensor, max_norm: float = 1.0, rows: Tensor | None = None) -> None:
    """Rescale rows with norm > ``max_norm`` onto the ball's surface; rows inside are unchanged
    (their factor is exactly 1). One multiply over the table: dense Adam moves every row, so after
    a step many trained rows sit just outside the ball, and gathering and scattering them cost up
    to 3× this on large tables. ``rows`` (indices): project only these rows, the ones a row-sparse
    step moved (each row's result is the same as the whole table's projection gives it)."""
    with torch.no_grad():
        if rows is None:
            norms = torch.linalg.vector_norm(weight, dim=1)
            weight.mul_((max_norm / norms).clamp_(max=1.0).unsqueeze(1))
            return
        selected = weight.index_select(0, rows)
        norms = torch.linalg.vector_norm(selected, dim=1)
        weight.index_copy_(0, rows, selected.mul_((max_norm / norms).clamp_(max=1.0).unsqueeze(1)))


def cosine_similarities(queries: Tensor, table: Tensor) -> Tensor:
    """Cosine similarity (Q, R) of each row of ``queries`` (Q, d) with each row of ``table``
    (R, d); a zero row has similarity 0 with everything."""
    eps = torch.finfo(table.dtype).tiny
    unit = table / torch.linalg.vector_norm(table, dim=1, keepdim=True).clamp_min(eps)
    unit_queries = queries / torch.linalg.vector_norm(queries, dim=1, keepdim=True).clamp_min(eps)
    return unit_queries @ unit.T


class Recommender(nn.Module):
    """Base class of all models.

    Subclasses set ``name`` and implement :meth:`score`; trainable ones implement :meth:`loss`
    (metric-learning models implement :meth:`pair_distances` and inherit the hinge loss).
    ``hparams`` holds the constructor arguments so a checkpoint can rebuild the model.
    """

    name: ClassVar[str]
    trainable: ClassVar[bool] = True
    #: Models that read a pool of the user's past items (AdaCML, HLR, HLR++) set this.
    uses_history: ClassVar[bool] = False
    #: This model's default training options where they differ from the library's recipe
    #: (:data:`hlrm.training.trainer.DEFAULT_RECIPE`); a user's own values override both.
    train_recipe: ClassVar[dict[str, Any]] = {}
    #: Training options of the second stage when the run starts from a pretrained model
    #: (``pretrain``), where they differ from ``train_recipe``.
    pretrained_recipe: ClassVar[dict[str, Any]] = {}
    #: Elements of the largest tensor scoring may build (2^21 float32 = 8 MiB): the evaluator
    #: blocks users, and factorised scorers block items, to stay within it. Several such
    #: tensors can be alive at once. ``top_k(memory_mib=...)`` sets it for one ranking. Small
    #: blocks stay in cache: at 8 MiB the factorised HLR and LRML scorers ran about 2x faster
    #: than at 64 MiB on ml-1m, at a fifth of the memory (docs/performance.md).
    block_elements: int = 2**21

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items
        self.hparams: dict[str, Any] = {}
        #: Pool size P and sampling rule ("random" or "unpop") for history-based models.
        self.history_size = 0
        self.history_sampling = "random"

    def prepare(self, train: sp.csr_matrix) -> None:
        """Data-dependent setup before training or scoring (popularity counts, neighbourhoods)."""

    def pair_distances(self, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        """Distances of each user to its positive (B,) and to its negatives (B, k)."""
        raise NotImplementedError(f"{self.name} does not define pair distances")

    def loss(self, batch: TrainBatch, objective: Objective) -> Tensor:
        positive, negative = self.pair_distances(batch)
        return objective.reduce(objective.terms(positive, negative, batch.negative_log_weights))

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores (U, n_items) of every item for ``users``; higher is better."""
        raise NotImplementedError

    def item_similarity(self, items: Tensor) -> Tensor:
        """Similarities (len(items), n_items) of the item indices ``items`` to every item, higher
        meaning more alike (each query item is included; callers drop it): what "more like this"
        ranks by. Each model family defines it in its own geometry."""
        raise ConfigError(f"{self.name} defines no item-item similarity")

    def score_candidates(self, users: Tensor, history: History | None, items: Tensor) -> Tensor:
        """Scores (U, C) of each user's own candidates ``items`` (U, C): the exact re-ranking
        stage of :mod:`hlrm.retrieval`. This default scores every item and gathers; models
        whose score is a function of the (user, item) pair compute only the candidates."""
        return self.score(users, history).gather(1, items)

    def max_block_users(self) -> int | None:
        """The most users :meth:`score` should see in one call so that its own intermediates stay
        within :attr:`block_elements`, or None when only its (U, I) result matters."""
        return None

    def after_step(self, rows: dict[str, Tensor] | None = None) -> None:
        """Constraints applied after every optimiser step (unit-ball projection). ``rows``: for
        parameters a row-sparse step moved only in part (by name), the rows it moved; the
        constraint need only look at those."""


MODELS: dict[str, type[Recommender]] = {}
ALIASES: dict[str, str] = {}


def register(*aliases: str):
    def decorate(cls: type[Recommender]) -> type[Recommender]:
        MODELS[cls.name] = cls
        for alias in aliases:
            ALIASES[alias] = cls.name
        return cls

    return decorate


def canonical_name(name: str) -> str:
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown model {name!r}; known models: {known}")
    return key


def _constructor_options(cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keyword-only options of ``cls``'s constructor with their defaults, and their type
    hints. A constructor that passes ``**options`` on to the next one in the MRO (an extension
    such as the -EASE variants, :mod:`hlrm.models.hybrid`) accepts that one's options too, so
    they are read from there rather than repeated."""
    constructors = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        constructors.append((init, parameters))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    defaults: dict[str, Any] = {}
    hints: dict[str, Any] = {}
    for init, parameters in reversed(constructors):  # the base's options first, then an extension's
        own_hints = typing.get_type_hints(init)
        for p in parameters:
            if p.kind is p.KEYWORD_ONLY and p.default is not inspect.Parameter.empty:
                defaults[p.name] = p.default
                if p.name in own_hints:
                    hints[p.name] = own_hints[p.name]
    return defaults, hints


def model_parameters(name: str) -> dict[str, Any]:
    """The hyper-parameters a model accepts, with their defaults."""
    return _constructor_options(MODELS[canonical_name(name)])[0]


def checked_options(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of the registered model ``name``, checked against its constructor before
    anything is built or read: unknown options and values of the wrong type are a
    :class:`ConfigError`; the string "none" means None for an option that admits None (TOML,
    hence a command line, has no null)."""
    key = canonical_name(name)
    accepted, hints = _constructor_options(MODELS[key])
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"model {key!r} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(accepted)) or 'none'}"
        )
    checked = dict(params)
    for option, value in params.items():
        hint = hints.get(option)
        if hint is None:
            continue
        if isinstance(value, str) and value.lower() == "none" and not _admits(hint, value):
            value = None
        if not _admits(hint, value):
            raise ConfigError(
                f"model {key!r}: {option} = {value!r} has the wrong type "
                f"(expected {_type_name(hint)})"
            )
        checked[option] = value
    return checked


def create_model(name: str, n_users: int, n_items: int, **params: Any) -> Recommender:
    """Build a registered model; unknown options and wrong types are a :class:`ConfigError`."""
    key = canonical_name(name)
    params = checked_options(key, params)
    model = MODELS[key](n_users, n_items, **params)
    model.hparams = {**model_parameters(key), **params}
    return model


def _admits(hint: Any, value: Any) -> bool:
    """Whether ``value`` (as TOML or a command line parsed it) fits the annotation ``hint``: an
    int is a float, a bool is not a number, a string stands for itself; annotations this does
    not know (containers, Literal) admit anything and the model checks the value itself."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in kinds:
        if kind is type(None) and value is None:
            return True
        if kind in (int, float) and isinstance(value, bool):
            continue
        if kind is float and isinstance(value, int):
            return True
        if not isinstance(kind, type) or typing.get_origin(kind) is not None:
            return True
        if isinstance(value, kind):
            return True
    return False


def _type_name(hint: Any) -> str:
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return " or ".join("none" if k is type(None) else getattr(k, "__name__", str(k)) for k in kinds)
