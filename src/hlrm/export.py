"""``hlrm export``: a trained run's weights, id maps and titles in files any tool can read.

Two layouts of the same content (schema in docs/serving.md), both readable with numpy or
pyarrow alone, no hlrm and no pickle:

* ``npz``: one ``numpy.savez_compressed`` file. Strings are fixed-width unicode arrays, so
  ``numpy.load(path)`` works with its default ``allow_pickle=False``.
* ``parquet``: a directory of tables: ``users.parquet`` and ``items.parquet`` (one row per user
  or item: internal index, original id, title, embedding and every other per-row tensor of the
  model), ``memory.parquet`` for relation models (one row per memory slot: its key and value),
  ``interactions.parquet`` and ``model.json`` (model name, options, scales, the rest).

Tensors named ``user_*`` hold one row per user and ``item_*`` one per item; the relation memory
``lram.keys`` (d × N) is stored per slot as ``key`` and ``lram.memory`` (N × d) as ``value``.
Models without per-user vectors (popularity, item-kNN, EASE) score from the training data
itself and are not exported.
``interactions`` lists every (user, item) pair the run knows (train, validation and test): the
history pools of HLR and HLR++ are drawn from it. Writes are atomic: a reader never sees a
half-written file or a directory mixing two exports.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import hlrm
from hlrm.errors import ConfigError, HlrmError
from hlrm.fileio import atomic_path, finite_or_none
from hlrm.runs import Run

FORMATS = ("npz", "parquet")
SCHEMA_VERSION = 1
#: The files of a parquet export; an existing directory is only replaced when it holds no others.
PARQUET_FILES = ("model.json", "users.parquet", "items.parquet", "memory.parquet",
                 "interactions.parquet", "item_item_train.parquet")  # fmt: skip
#: Relation-memory tensors and the names they get in an export.
MEMORY_KEYS = {"lram.keys": "memory_keys", "lram.memory": "memory_values"}
#: The item-item term of CML-EASE / HLR-EASE (:mod:`hlrm.models.hybrid`) and its export names:
#: EASE's weights B, one row per item; the training rows x_u it reads, as (user, item) pairs
#: (``item_item_train.parquet``); its bookkeeping (the shape it was fitted on).
ITEM_ITEM_KEYS = {
    "item_item.weights": "item_item_weights",
    "item_item.train_indptr": "item_item_train_indptr",
    "item_item.train_indices": "item_item_train_indices",
    "item_item.fitted_on": "item_item_fitted_on",
}


def model_arrays(run: Run) -> dict[str, np.ndarray]:
    """Every tensor of the model's state as a numpy array, relation memory and scales renamed."""
    state = run.model.state_dict()
    if not any(name.startswith("user_") for name in state):
        raise ConfigError(
            f"{run.model.name} has no user or item vectors to export: its scores come from the "
            "training data (export cml, cml-ease, lrml, hlr, hlr++, hlr-ease, hlr++-ease, transcf, "
            "adacml, bpr or als runs)"
        )
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        if tensor is None:
            continue
        value = tensor.detach().to("cpu")
        if name == "lram.log_scales":
            address, attention = run.model.lram.scales
            arrays["address_scale"] = np.float32(address)
            arrays["attention_scale"] = np.float32(attention)
            continue
        arrays[MEMORY_KEYS.get(name, ITEM_ITEM_KEYS.get(name, name))] = value.numpy()
    return arrays


def metadata(run: Run) -> dict[str, Any]:
    model = run.model
    return finite_or_none(
        {
            "format": "hlrm-export",
            "schema_version": SCHEMA_VERSION,
            "hlrm_version": hlrm.__version__,
            "model": model.name,
            "hparams": model.hparams,
            "dataset": run.split.name,
            "n_users": run.split.n_users,
            "n_items": run.split.n_items,
        }
    )


def export_run(run: Run, fmt: str, out: str | Path) -> Path:
    """Write ``run`` to ``out`` as ``fmt`` (``npz`` or ``parquet``); returns the path written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = Path(out)
    if fmt == "npz":
        if out.is_dir():
            raise HlrmError(f"--out {out} is a directory; an npz export is one file")
        with atomic_path(out) as tmp, tmp.open("wb") as handle:
            np.savez_compressed(handle, **npz_arrays(run))
    else:
        write_parquet_directory(run, out)
    return out


def npz_arrays(run: Run) -> dict[str, np.ndarray]:
    split = run.split
    everything = split.everything.tocoo()
    arrays: dict[str, np.ndarray] = {
        "metadata_json": np.array(json.dumps(metadata(run), sort_keys=True)),
        "user_ids": np.asarray(split.user_ids).astype(str),
        "item_ids": np.asarray(split.item_ids).astype(str),
        "interactions_user": everything.row.astype(np.int64),
        "interactions_item": everything.col.astype(np.int64),
    }
    if split.item_titles is not None:
        arrays["item_titles"] = np.asarray(split.item_titles).astype(str)
    for name, value in model_arrays(run).items():
        if name in arrays:
            raise HlrmError(f"the model's tensor {name!r} clashes with an export field")
        arrays[name] = value
    return arrays


def write_parquet_directory(run: Run, out: Path) -> None:
    """Build the tables in a temporary directory beside ``out``, then swap it into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if out.exists() and not out.is_dir():
        raise HlrmError(f"--out {out} is a file; a parquet export is a directory")
    if out.is_dir():
        foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in PARQUET_FILES)
        if foreign:
            raise HlrmError(
                f"--out {out} holds files that are not an hlrm export ({', '.join(foreign[:3])}); "
                f"choose a new or empty directory"
            )
    split, n_users, n_items = run.split, run.split.n_users, run.split.n_items
    users: dict[str, Any] = {
        "user_index": pa.array(np.arange(n_users, dtype=np.int64)),
        "user_id": pa.array(np.asarray(split.user_ids).astype(str)),
    }
    items: dict[str, Any] = {
        "item_index": pa.array(np.arange(n_items, dtype=np.int64)),
        "item_id": pa.array(np.asarray(split.item_ids).astype(str)),
    }
    if split.item_titles is not None:
        items["title"] = pa.array(np.asarray(split.item_titles).astype(str))
    memory: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    arrays = model_arrays(run)
    item_item_train = None
    if "item_item_train_indptr" in arrays:  # the rows x_u the item-item term reads
        indptr = arrays.pop("item_item_train_indptr")
        indices = arrays.pop("item_item_train_indices")
        rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        item_item_train = {
            "user_index": pa.array(rows),
            "item_index": pa.array(indices.astype(np.int64)),
        }
    for name, value in arrays.items():
        if name == "memory_keys":
            memory["key"] = row_column(pa, value.T)
        elif name == "memory_values":
            memory["value"] = row_column(pa, value)
        elif name.startswith("user_"):
            users[name] = row_column(pa, value)
        elif name.startswith("item_") and value.ndim and len(value) == n_items:
            items[name] = row_column(pa, value)
        else:  # scales and small bookkeeping (ALS's fitted_on, the blend weight)
            rest[name] = value.tolist()
    everything = split.everything.tocoo()
    tables = {
        "users.parquet": users,
        "items.parquet": items,
        "interactions.parquet": {
            "user_index": pa.array(everything.row.astype(np.int64)),
            "item_index": pa.array(everything.col.astype(np.int64)),
        },
    }
    if item_item_train is not None:
        tables["item_item_train.parquet"] = item_item_train
    if memory:
        tables["memory.parquet"] = {
            "slot": pa.array(np.arange(len(memory["value"]), dtype=np.int64)),
            **memory,
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for filename, columns in tables.items():
            pq.write_table(pa.table(columns), staging / filename)
        info = {**metadata(run), "other_tensors": finite_or_none(rest)}
        (staging / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        replace_directory(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def row_column(pa: Any, value: np.ndarray) -> Any:
    """One row per leading index: scalars as a plain column, vectors as fixed-size lists."""
    if value.ndim == 1:
        return pa.array(value)
    flat = np.ascontiguousarray(value).reshape(len(value), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def replace_directory(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``; an existing ``out`` is moved aside first and removed after,
    so at every moment ``out`` is either the old export or the new one."""
    if not out.exists():
        os.replace(staging, out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, retired / "export")
    try:
        os.replace(staging, out)
    except OSError:
        os.replace(retired / "export", out)
        raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def load_npz_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an npz export (a convenience; ``numpy.load`` reads the file alone)."""
    with np.load(path) as archive:
        return json.loads(str(archive["metadata_json"]))
