"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hlrm.errors import ConfigError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file private (0600) whatever the umask; a run's files are meant
        # to be shared like any other file the user writes (0644 under the usual umask 022).
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else by
    setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def finite_or_none(obj: Any) -> Any:
    """Replace NaN and infinities (which JSON cannot hold) by ``None``, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON (no NaN), written atomically."""
    text = json.dumps(finite_or_none(obj), indent=2, sort_keys=True, allow_nan=False)
    write_text(path, text + "\n")


#: File suffix → table format of :func:`write_table`.
TABLE_FORMATS = {".parquet": "parquet", ".csv": "csv"}


def table_format(path: str | Path) -> str:
    """The format :func:`write_table` uses for ``path``, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ConfigError(
            f"{path}: write tables to a {' or '.join(TABLE_FORMATS)} file, not {suffix or 'no'} "
            "suffix"
        )
    return TABLE_FORMATS[suffix]


def write_table(path: str | Path, frame: Any) -> None:
    """A pandas DataFrame as parquet or CSV (by suffix), written atomically, without index."""
    fmt = table_format(path)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` leaves when a process is killed between
    writing and renaming (``.<name>.<random>.tmp``); nothing ever reads them. Call it only where
    no other writer is active (at the start of a run). Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = [entry for entry in directory.glob(".*.tmp") if entry.is_file()]
    for entry in removed:
        entry.unlink(missing_ok=True)
    return removed
