"""The interaction-matrix types that readers produce and models, samplers and evaluators share."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from hlrm.errors import DataError, UnknownIdError


def binary_csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A binary float32 CSR matrix with sorted indices; duplicate pairs collapse to one entry."""
    data = np.ones(len(users), dtype=np.float32)
    matrix = sp.csr_matrix((data, (users, items)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


class IdMap:
    """Original ids ↔ contiguous internal indices ``0..n-1``."""

    def __init__(self, original_ids: np.ndarray, kind: str):
        self.original_ids = np.asarray(original_ids)
        self.kind = kind
        self._index = {self._key(v): i for i, v in enumerate(self.original_ids.tolist())}

    @staticmethod
    def _key(value: object) -> str:
        return str(value)

    def __len__(self) -> int:
        return len(self.original_ids)

    def index(self, original_id: object) -> int:
        """Internal index of ``original_id``; ids compare by their text (``"42"`` finds ``42``)."""
        try:
            return self._index[self._key(original_id)]
        except KeyError:
            raise UnknownIdError(self.kind, [original_id]) from None

    def indices(self, original_ids: Iterable[object]) -> np.ndarray:
        """Internal indices of ``original_ids``; one :class:`UnknownIdError` names every unknown."""
        original_ids = list(original_ids)
        found = [self._index.get(self._key(v), -1) for v in original_ids]
        if -1 in found:
            unknown = [v for v, i in zip(original_ids, found, strict=True) if i < 0]
            raise UnknownIdError(self.kind, unknown)
        return np.array(found, dtype=np.int64)


def _storable_ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str)


@dataclass
class SplitData:
    """Train / validation / test interactions over one shared user and item index.

    All three matrices are binary ``float32`` CSR of shape ``(n_users, n_items)``; validation and
    test may be empty (a model fitted for deployment: evaluation then refuses with a reason).
    ``user_ids`` and ``item_ids`` hold the original ids (position = internal index);
    ``item_titles`` holds display names where the dataset has them.
    """

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    name: str = "custom"
    item_titles: np.ndarray | None = field(default=None)
    #: What preprocessing did (``hlrm.data.pipeline.PreprocessingStep``, one per step) when the
    #: split was built by ``load_split``; not stored in ``split.npz``.
    preprocessing: list[Any] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        shapes = {m.shape for m in (self.train, self.valid, self.test)}
        if len(shapes) != 1:
            raise DataError(f"train/valid/test shapes differ: {sorted(shapes)}")
        if self.train.shape != (len(self.user_ids), len(self.item_ids)):
            raise DataError("id maps do not match the interaction matrix shape")
        if self.train.nnz == 0:
            raise DataError(f"{self.name}: the training split is empty")

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    @cached_property
    def users(self) -> IdMap:
        return IdMap(self.user_ids, "user")

    @cached_property
    def items(self) -> IdMap:
        return IdMap(self.item_ids, "item")

    @cached_property
    def train_valid(self) -> sp.csr_matrix:
        """Everything a user is known to have before test time: masked when ranking for test."""
        merged = (self.train + self.valid).tocsr()
        merged.data[:] = 1.0
        merged.sort_indices()
        return merged

    @cached_property
    def everything(self) -> sp.csr_matrix:
        """Every interaction of every split: what a deployed model knows a user has (masked, and
        the history pools drawn from it, when recommending to a known user)."""
        merged = (self.train + self.valid + self.test).tocsr()
        merged.data[:] = 1.0
        merged.sort_indices()
        return merged

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Number of training interactions per item."""
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)

    def stats(self) -> dict[str, float | int | str]:
        total = self.train.nnz + self.valid.nnz + self.test.nnz
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": total,
            "train": self.train.nnz,
            "valid": self.valid.nnz,
            "test": self.test.nnz,
            "density": total / (self.n_users * self.n_items),
            "test_users": int((np.diff(self.test.indptr) > 0).sum()),
        }

    def item_label(self, index: int) -> str:
        label = str(self.item_ids[index])
        if self.item_titles is not None and self.item_titles[index]:
            label = f"{label} ({self.item_titles[index]})"
        return label

    def save(self, path: str) -> None:
        """Store the split as one ``.npz`` (no pickles) so a run can be re-evaluated later.
        Integer ids stay int64 (a reopened run answers in the ids' own type), others are text."""
        arrays: dict[str, np.ndarray] = {
            "user_ids": _storable_ids(self.user_ids),
            "item_ids": _storable_ids(self.item_ids),
            "name": np.array(self.name),
        }
        if self.item_titles is not None:
            arrays["item_titles"] = self.item_titles.astype(str)
        for part in ("train", "valid", "test"):
            coo = getattr(self, part).tocoo()
            arrays[f"{part}_rows"] = coo.row.astype(np.int32)
            arrays[f"{part}_cols"] = coo.col.astype(np.int32)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: str) -> SplitData:
        """The split :meth:`save` wrote; a missing, truncated or foreign file is one
        :class:`DataError` naming it."""
        try:
            return cls._load(path)
        except FileNotFoundError:
            message = f"{path} is missing; a run cannot be used without its split"
            raise DataError(message) from None
        except (OSError, ValueError, EOFError, KeyError, IndexError, zipfile.BadZipFile,
                zlib.error) as exc:  # fmt: skip
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DataError(f"{path} is damaged or not an hlrm split ({reason})") from None

    @classmethod
    def _load(cls, path: str) -> SplitData:
        with np.load(path, allow_pickle=False) as z:
            user_ids, item_ids = z["user_ids"], z["item_ids"]
            shape = (len(user_ids), len(item_ids))
            parts = {
                part: binary_csr(z[f"{part}_rows"], z[f"{part}_cols"], shape)
                for part in ("train", "valid", "test")
            }
            titles = z["item_titles"] if "item_titles" in z.files else None
            return cls(
                **parts,
                user_ids=user_ids,
                item_ids=item_ids,
                name=str(z["name"]),
                item_titles=titles,
            )
