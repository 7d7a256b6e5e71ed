"""Readers for interaction files: one entry point, several on-disk layouts, one kind of error.

:func:`read_interactions` returns a DataFrame with columns ``user`` and ``item`` plus ``rating``
(float64) and ``timestamp`` (int64, seconds) where the layout has them. Files ending in ``.xz`` or
``.gz`` are decompressed transparently, so the compressed copies in a data directory are read as
they are. Fixed numeric layouts are parsed by pyarrow (ML-1M's million lines take a fraction of
a second); when that fast path fails, a line-by-line scan finds the first offending line, so every
problem surfaces as one :class:`~hlrm.errors.DataError` naming the file and, where there are
lines, the line number.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import lzma
import re
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from hlrm.errors import ConfigError, DataError

#: Layouts :func:`read_interactions` understands.
FORMATS = ("csv", "tsv", "parquet", "movielens", "lightgcn", "citeulike", "hetrec", "diffnet")
#: Layouts whose columns are chosen by name (the others have fixed columns).
TABULAR_FORMATS = ("csv", "tsv", "parquet")
#: Suffixes that mean "decompress first", in the order a data directory is searched.
COMPRESSED_SUFFIXES = (".xz", ".gz")

_INT = pa.int64()
_FLOAT = pa.float64()
_CANONICAL_INT = r"^-?(0|[1-9][0-9]{0,17})$"


def plain_name(path: str | Path) -> str:
    """The file name without a compression suffix: ``u.data.xz`` → ``u.data``."""
    name = Path(path).name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_bytes(path: str | Path) -> bytes:
    """The uncompressed content of ``path`` (``.xz`` and ``.gz`` are decompressed)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not an interaction file") from None
    try:
        if path.name.endswith(".xz"):
            return lzma.decompress(raw)
        if path.name.endswith(".gz"):
            return gzip.decompress(raw)
    except (lzma.LZMAError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress ({exc})") from None
    return raw


def read_interactions(
    path: str | Path,
    fmt: str,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read the interactions stored at ``path`` in layout ``fmt`` (one of :data:`FORMATS`).

    ``csv``/``tsv``/``parquet`` pick columns by name (``user_col`` and ``item_col`` default to
    ``user`` and ``item``; rating and timestamp are read only when named); csv and tsv need a
    header row. Ids that are all canonical integers become int64; any other ids stay strings.
    The fixed layouts (``movielens``, ``lightgcn``, ``citeulike``, ``hetrec``, ``diffnet``) take no
    column options.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    options = {
        "user_col": user_col,
        "item_col": item_col,
        "rating_col": rating_col,
        "timestamp_col": timestamp_col,
        "sep": sep,
    }
    if fmt not in TABULAR_FORMATS:
        given = [name for name, value in options.items() if value is not None]
        if given:
            raise ConfigError(
                f"{', '.join(given)} only apply to csv, tsv and parquet files, not to {fmt!r}"
            )
    if fmt == "parquet" and sep is not None:
        raise ConfigError("sep does not apply to parquet files")
    data = read_bytes(path)
    if not data or data.isspace():
        raise DataError(f"{path} is empty")
    if fmt in TABULAR_FORMATS:
        columns = {
            "user": user_col or "user",
            "item": item_col or "item",
            "rating": rating_col,
            "timestamp": timestamp_col,
        }
        wanted = {key: name for key, name in columns.items() if name is not None}
        if fmt == "parquet":
            frame = _read_parquet(path, data, wanted)
        else:
            frame = _read_delimited(path, data, sep or ("," if fmt == "csv" else "\t"), wanted)
    else:
        frame = _FIXED_READERS[fmt](path, data)
    if frame.empty:
        raise DataError(f"{path} has no interactions")
    return frame


def read_titles(path: str | Path) -> dict[object, str]:
    """Item id → display title from a dataset's metadata file, chosen by its name.

    Understands MovieLens ``u.item`` (``|``-separated, latin-1), ``movies.dat`` (``::``),
    ``movies.csv`` (quoted CSV with header) and HetRec ``artists.dat`` (tab, header, UTF-8).
    """
    name = plain_name(path)
    data = read_bytes(path)
    if name == "movies.csv":
        rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")))
        next(rows, None)
        return _title_map(path, ((rows.line_num, row) for row in rows))
    layouts = {
        "u.item": ("|", "latin-1", 0),
        "movies.dat": ("::", "latin-1", 0),
        "artists.dat": ("\t", "utf-8", 1),
    }
    if name not in layouts:
        raise DataError(f"{path}: no title reader for files named {name!r}")
    sep, encoding, skip = layouts[name]
    lines = data.decode(encoding, errors="replace").splitlines()
    numbered = ((n, line.split(sep)) for n, line in enumerate(lines, 1) if n > skip and line)
    return _title_map(path, numbered)


def _title_map(path: str | Path, rows: Iterable[tuple[int, list[str]]]) -> dict[object, str]:
    titles: dict[object, str] = {}
    for lineno, fields in rows:
        if len(fields) < 2:
            raise DataError(f"{path}:{lineno}: expected an id and a title")
        key = fields[0]
        titles[int(key) if re.match(_CANONICAL_INT, key) else key] = fields[1]
    return titles


# ---- fixed numeric layouts -----------------------------------------------------------------------
def _read_fixed(
    path: str | Path,
    data: bytes,
    *,
    sep: str,
    columns: list[str],
    header: list[str] | None = None,
) -> pd.DataFrame:
    """Parse a delimiter-separated numeric layout without quoting.

    ``header`` (if given) is the exact first line the layout requires. ``user``, ``item`` and
    ``timestamp`` must be integers, ``rating`` a number; every line needs exactly ``columns``.
    """
    if header is not None:
        first = _first_line(data, "latin-1")
        if first.split(sep) != header:
            raise DataError(
                f"{path}:1: expected the header {sep.join(header)!r}, found {first[:80]!r}"
            )
    delimiter = sep
    if len(sep) > 1:
        data = data.replace(sep.encode(), b"\x1f")
        delimiter = "\x1f"
    types = {c: _FLOAT if c == "rating" else _INT for c in columns}
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(
                column_names=columns, skip_rows=1 if header else 0, encoding="latin-1"
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
    except pa.ArrowInvalid as exc:
        table, failure = None, str(exc)
    else:
        failure = "a field is empty"
        if not any(table.column(c).null_count for c in columns):
            return _to_frame(table)
    lines = data.decode("latin-1").splitlines()
    start = 2 if header else 1
    for lineno, line in enumerate(lines[start - 1 :], start):
        if not line.strip():
            continue
        fields = line.split(delimiter)
        if len(fields) != len(columns):
            raise DataError(
                f"{path}:{lineno}: expected {len(columns)} {_sep_name(sep)}-separated fields "
                f"({' '.join(columns)}), found {len(fields)}"
            )
        for column, field in zip(columns, fields, strict=True):
            _check_number(path, lineno, column, field, integer=column != "rating")
    raise DataError(f"{path}: cannot parse ({failure})")


def _first_line(data: bytes, encoding: str) -> str:
    """The first line, decoded and stripped, without copying the rest of a large file."""
    end = data.find(b"\n")
    return data[: end if end >= 0 else len(data)].decode(encoding, errors="replace").strip()


def _check_number(path: str | Path, lineno: int, column: str, field: str, *, integer: bool) -> None:
    try:
        int(field) if integer else float(field)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise DataError(f"{path}:{lineno}: {column} {field.strip()!r} is not {kind}") from None


def _sep_name(sep: str) -> str:
    return {"\t": "tab", ",": "comma", " ": "space"}.get(sep, repr(sep))


def _to_frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    if "rating" in frame:
        frame["rating"] = frame["rating"].astype(np.float64)
    return frame


def _read_movielens(path: str | Path, data: bytes) -> pd.DataFrame:
    """MovieLens ratings: ``u.data`` (tab), ``ratings.dat`` (``::``, with or without the
    timestamp column) or ``ratings.csv`` (ML-20M / ml-latest, with header); told apart by the
    first line, so renamed or compressed copies work too."""
    first = _first_line(data.lstrip(), "latin-1")
    full = ["user", "item", "rating", "timestamp"]
    if "::" in first:
        columns = full if len(first.split("::")) == 4 else full[:3]
        return _read_fixed(path, data, sep="::", columns=columns)
    if first.lower().startswith("userid,"):
        header = ["userId", "movieId", "rating", "timestamp"]
        return _read_fixed(path, data, sep=",", columns=full, header=header)
    if "\t" in first:
        return _read_fixed(path, data, sep="\t", columns=full)
    raise DataError(
        f"{path}:1: not a MovieLens ratings file (expected the u.data, ratings.dat or "
        f"ratings.csv layout), first line {first[:80]!r}"
    )


def _read_hetrec(path: str | Path, data: bytes) -> pd.DataFrame:
    """HetRec 2011 ``user_artists.dat``: tab-separated ``userID artistID weight`` with a header;
    the play count (weight) becomes the rating so a plays threshold can apply."""
    header = ["userID", "artistID", "weight"]
    return _read_fixed(path, data, sep="\t", columns=["user", "item", "rating"], header=header)


def _read_diffnet(path: str | Path, data: bytes) -> pd.DataFrame:
    """DiffNet ``*.rating``: tab-separated ``user item 1`` (implicit; the 1 is kept as rating)."""
    return _read_fixed(path, data, sep="\t", columns=["user", "item", "rating"])


# ---- variable-length layouts ---------------------------------------------------------------------
def _read_lightgcn(path: str | Path, data: bytes) -> pd.DataFrame:
    """LightGCN/NGCF adjacency lists: ``user item item ...`` per line (a user may have no items)."""
    users: list[int] = []
    items: list[int] = []
    for lineno, line in enumerate(data.decode("latin-1").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        ids = _int_fields(path, lineno, fields, "id")
        users.extend([ids[0]] * (len(ids) - 1))
        items.extend(ids[1:])
    return _pairs(users, items)


def _read_citeulike(path: str | Path, data: bytes) -> pd.DataFrame:
    """CiteULike ``users.dat``: line *u* (user id *u*, 0-based) is ``n item_1 ... item_n``.

    The user id is the line position, so a blank line would silently shift every later user:
    it is an error, as is a count that disagrees with the number of items."""
    users: list[int] = []
    items: list[int] = []
    for lineno, line in enumerate(data.decode("latin-1").rstrip().splitlines(), 1):
        fields = line.split()
        if not fields:
            raise DataError(f"{path}:{lineno}: empty line (expected 'count item item ...')")
        ids = _int_fields(path, lineno, fields, "field")
        if ids[0] != len(ids) - 1:
            raise DataError(
                f"{path}:{lineno}: the count field says {ids[0]} items but the line has "
                f"{len(ids) - 1}"
            )
        users.extend([lineno - 1] * ids[0])
        items.extend(ids[1:])
    return _pairs(users, items)


def _int_fields(path: str | Path, lineno: int, fields: list[str], what: str) -> list[int]:
    try:
        return [int(f) for f in fields]
    except ValueError:
        bad = next(f for f in fields if not re.match(r"^[+-]?\d+$", f))
        raise DataError(f"{path}:{lineno}: {what} {bad!r} is not an integer") from None


def _pairs(users: list[int], items: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {"user": np.array(users, dtype=np.int64), "item": np.array(items, dtype=np.int64)}
    )


_FIXED_READERS: dict[str, Callable[[str | Path, bytes], pd.DataFrame]] = {
    "movielens": _read_movielens,
    "lightgcn": _read_lightgcn,
    "citeulike": _read_citeulike,
    "hetrec": _read_hetrec,
    "diffnet": _read_diffnet,
}


# ---- user tables (csv, tsv, parquet) -------------------------------------------------------------
def _read_delimited(
    path: str | Path, data: bytes, sep: str, wanted: dict[str, str]
) -> pd.DataFrame:
    """A quoted CSV/TSV with a header row; only the ``wanted`` columns are converted."""
    data = data.removeprefix(codecs.BOM_UTF8)
    delimiter = sep
    if len(sep) > 1:
        data = data.replace(sep.encode(), b"\x1f")
        delimiter = "\x1f"
    header = next(csv.reader([_first_line(data, "utf-8")], delimiter=delimiter))
    _check_columns(path, wanted, header)
    types = {wanted["user"]: pa.string(), wanted["item"]: pa.string()}
    if "rating" in wanted:
        types[wanted["rating"]] = _FLOAT
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=list(wanted.values()),
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        _scan_delimited(path, data, delimiter, header, wanted)
        raise DataError(f"{path}: cannot parse ({exc})") from None
    try:
        return _standardize(path, table.to_pandas(), wanted)
    except DataError:
        _scan_delimited(path, data, delimiter, header, wanted)
        raise


def _scan_delimited(
    path: str | Path, data: bytes, delimiter: str, header: list[str], wanted: dict[str, str]
) -> None:
    """Raise for the first row that breaks the table (wrong width, empty id, bad number)."""
    rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")), delimiter=delimiter)
    next(rows)
    position = {key: header.index(name) for key, name in wanted.items()}
    for row in rows:
        if not row:
            continue
        lineno = rows.line_num
        if len(row) != len(header):
            raise DataError(
                f"{path}:{lineno}: expected {len(header)} fields like the header, found {len(row)}"
            )
        for key, index in position.items():
            value = row[index].strip()
            if not value:
                raise DataError(f"{path}:{lineno}: empty {wanted[key]!r}")
            if key == "rating":
                _check_number(path, lineno, wanted[key], value, integer=False)


def _read_parquet(path: str | Path, data: bytes, wanted: dict[str, str]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    _check_columns(path, wanted, [str(c) for c in frame.columns])
    return _standardize(path, frame[list(wanted.values())], wanted)


def _check_columns(path: str | Path, wanted: dict[str, str], present: list[str]) -> None:
    for key, name in wanted.items():
        if name not in present:
            raise DataError(
                f"{path}: no column {name!r} (the {key} column); "
                f"its columns are: {', '.join(map(repr, present))}"
            )


def _standardize(path: str | Path, raw: pd.DataFrame, wanted: dict[str, str]) -> pd.DataFrame:
    """Rename to the standard columns and fix their types; row numbers count data rows from 1."""
    out = pd.DataFrame(index=pd.RangeIndex(len(raw)))
    for key in ("user", "item"):
        out[key] = _ids(path, raw[wanted[key]], wanted[key])
    if "rating" in wanted:
        rating = pd.to_numeric(raw[wanted["rating"]], errors="coerce")
        _first_missing(path, rating, wanted["rating"], "is not a number")
        out["rating"] = rating.astype(np.float64).to_numpy()
    if "timestamp" in wanted:
        out["timestamp"] = _timestamps(path, raw[wanted["timestamp"]], wanted["timestamp"])
    return out


def _ids(path: str | Path, column: pd.Series, name: str) -> np.ndarray:
    """Integer ids stay integers; anything else (including ``007``) stays a string."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    _first_missing(path, column, name, "is empty")
    if pd.api.types.is_float_dtype(column.dtype) and (column % 1 == 0).all():
        return column.to_numpy(dtype=np.int64)  # integral floats (e.g. from a parquet writer)
    text = pa.array(column.astype(str).str.strip().to_numpy(dtype=object), type=pa.string())
    if pc.all(pc.match_substring_regex(text, _CANONICAL_INT)).as_py():
        return pc.cast(text, _INT).to_numpy()
    return np.asarray(text.to_pylist(), dtype=str)


def _timestamps(path: str | Path, column: pd.Series, name: str) -> np.ndarray:
    """Numbers are taken as epoch seconds; dates and date-times (UTC unless zoned) become them."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        moments = pd.to_datetime(column, utc=True)
    else:
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().all():
            return numeric.to_numpy(dtype=np.int64)
        moments = pd.to_datetime(column, errors="coerce", utc=True)
        _first_missing(path, moments, name, "is not a number or a date")
    seconds = (moments - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


def _first_missing(path: str | Path, values: pd.Series, name: str, problem: str) -> None:
    missing = np.flatnonzero(pd.isna(values).to_numpy())
    if len(missing):
        row = int(missing[0])
        raise DataError(f"{path}: row {row + 1}: {name!r} {problem}")
