"""Readers for interaction files: one entry point, several on-disk layouts, one kind of error.

:func:`read_interactions` returns a DataFrame with columns ``user`` and ``item`` plus ``rating``
(float64, always finite) and ``timestamp`` (int64, seconds) where the layout has them.

Files are taken as they come from the wild. Compression (gzip, xz, bzip2, a one-file zip) is
recognised by its magic bytes, not by the name, so a ``ratings.csv`` that is really gzip reads like
``ratings.csv.gz``. Text is normalised before parsing: a UTF-8 byte order mark is dropped, UTF-16
and UTF-32 with a byte order mark become UTF-8, and ``\\r\\n`` and old-Mac ``\\r`` line endings
become ``\\n``, so a line number means the same thing to every reader below.

Fixed numeric layouts are parsed by pyarrow (ML-1M's million lines take a fraction of a second);
when that fast path fails, a line-by-line scan finds the first offending line. Whatever is wrong
(a malformed line, a binary or truncated file, a decompression bomb, a file too large for memory)
surfaces as one :class:`~hlrm.errors.DataError` naming the file and, where there are lines, the
line number; options that contradict each other raise :class:`~hlrm.errors.ConfigError`.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import io
import lzma
import math
import re
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from hlrm.errors import ConfigError, DataError

#: Layouts :func:`read_interactions` understands.
FORMATS = ("csv", "tsv", "parquet", "movielens", "lightgcn", "citeulike", "hetrec", "diffnet")
#: Layouts whose columns are chosen by name (the others have fixed columns).
TABULAR_FORMATS = ("csv", "tsv", "parquet")
#: Suffixes that mean "decompress first", in the order a data directory is searched.
COMPRESSED_SUFFIXES = (".xz", ".gz")
#: Decompressed data larger than this is refused: a few kilobytes of gzip or xz can expand to
#: terabytes (a decompression bomb), and the readers hold the whole file in memory. The largest
#: public datasets read here (ML-20M's ratings.csv, about 0.5 GiB) stay far below it; raise it
#: by assigning to ``hlrm.data.readers.MAX_DECOMPRESSED_BYTES`` for a genuinely larger file.
MAX_DECOMPRESSED_BYTES = 4 * 2**30

#: Column names recognised for each role of a csv/tsv/parquet file whose option is not given,
#: in order of preference. They are compared ignoring case and the characters ``_ - . `` and
#: space, so ``userId``, ``user_id`` and ``User ID`` are the same name.
COLUMN_NAMES = {
    "user": (
        "user", "user_id", "uid", "customer_id", "customer", "reviewer_id", "visitor_id",
        "member_id", "account_id",
    ),
    "item": (
        "item", "item_id", "iid", "movie_id", "movie", "product_id", "product", "asin",
        "artist_id", "track_id", "song_id", "book_id", "isbn", "article_id", "business_id",
        "poi_id", "location_id", "venue_id",
    ),
    "rating": (
        "rating", "ratings", "score", "stars", "weight", "play_count", "plays", "count",
        "preference", "feedback", "value",
    ),
    "timestamp": (
        "timestamp", "time", "datetime", "date", "ts", "unix_time", "unix_review_time",
        "created_at", "event_time", "checkin_time",
    ),
}  # fmt: skip
#: Roles every interaction file has; the others are read where a column is found.
_REQUIRED_ROLES = ("user", "item")

_INT = pa.int64()
_FLOAT = pa.float64()
_CANONICAL_INT = r"^-?(0|[1-9][0-9]{0,17})$"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Every suffix that names a compression the readers undo, and the compression it names.
_SUFFIX_CODECS = {".xz": "xz", ".gz": "gzip", ".bz2": "bzip2", ".zip": "zip"}
#: Compressed or archive formats that are recognised only to say so clearly.
_UNSUPPORTED_MAGIC = {
    b"\x28\xb5\x2f\xfd": "zstd",
    b"7z\xbc\xaf\x27\x1c": "7-Zip",
    b"Rar!\x1a\x07": "RAR",
}
#: Byte order marks of the wide Unicode encodings (UTF-32 first: its LE mark starts like UTF-16's).
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CHUNK_BYTES = 16 * 2**20
#: Lone surrogates that ``surrogateescape`` decoding puts where the bytes were not UTF-8.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def plain_name(path: str | Path) -> str:
    """The file name without a compression suffix: ``u.data.xz`` → ``u.data``."""
    name = Path(path).name
    for suffix in _SUFFIX_CODECS:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_regular_file(path: str | Path) -> None:
    """Refuse what is not a regular file before reading it: a FIFO or a character device
    (``/dev/zero``, ``/dev/stdin``) would be read until memory runs out, or forever."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path} is a directory, not an interaction file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
        raise DataError(f"{path} is {kind}; hlrm reads data from regular files only")


def read_bytes(path: str | Path) -> bytes:
    """The uncompressed content of ``path``.

    The content's magic bytes decide whether and how to decompress, so a gzip file saved as
    ``ratings.csv`` still reads. A name that promises compression the content lacks (``x.gz``
    holding something else) is an error rather than a guess: it usually means a broken download.
    """
    path = Path(path)
    check_regular_file(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not an interaction file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    codec = _compression(path, raw)
    if codec is None:
        promised = _SUFFIX_CODECS.get(path.suffix)
        if promised is not None:
            raise DataError(
                f"{path}: cannot decompress (the name ends in {path.suffix} but the content is "
                f"not {promised} data)"
            )
        return raw
    return _decompress(path, raw, codec)


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

    ``csv``/``tsv``/``parquet`` pick columns by name; csv and tsv need a header row. A role
    whose option is not given is found among the common names of :data:`COLUMN_NAMES`
    (``user``/``user_id``/``userId``, ``item``/``item_id``/``movieId``, ``rating``,
    ``timestamp``/``time``, ...); the user and item columns must be found, rating and
    timestamp are read where found. The columns used are in ``frame.attrs["columns"]``
    (role → column name). Ids that are all canonical integers become int64; any other ids
    stay strings. The fixed layouts (``movielens``, ``lightgcn``, ``citeulike``, ``hetrec``,
    ``diffnet``) take no column options.
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
    if sep and any(c in sep for c in '"\r\n'):
        raise ConfigError(f"sep {sep!r} cannot contain a quote or a line break")
    given = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    _check_roles({role: name for role, name in given.items() if name is not None})
    with _enough_memory(path):
        data = read_bytes(path)
        if fmt != "parquet":
            data = _plain_text(path, data)
        if not data or data.isspace():
            raise DataError(f"{path} is empty")
        if fmt == "parquet":
            frame = _read_parquet(path, data, given)
        elif fmt in TABULAR_FORMATS:
            frame = _read_delimited(path, data, sep or ("," if fmt == "csv" else "\t"), given)
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
    layouts = {
        "u.item": ("|", "latin-1", 0),
        "movies.dat": ("::", "latin-1", 0),
        "artists.dat": ("\t", "utf-8", 1),
    }
    if name != "movies.csv" and name not in layouts:
        raise DataError(f"{path}: no title reader for files named {name!r}")
    with _enough_memory(path):
        data = _plain_text(path, read_bytes(path))
        if name == "movies.csv":
            rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
            try:
                with _csv_fields_up_to(len(data)):
                    next(rows, None)
                    return _title_map(path, ((rows.line_num, row) for row in rows))
            except csv.Error as exc:
                raise DataError(f"{path}:{rows.line_num}: not valid CSV ({_reason(exc)})") from None
        sep, encoding, skip = layouts[name]
        lines = data.decode(encoding, errors="replace").split("\n")
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


# ---- bytes: compression, encodings, line endings, memory ----------------------------------------
def _compression(path: Path, raw: bytes) -> str | None:
    """The compression ``raw`` starts with (by magic bytes), or None for anything else."""
    if raw.startswith(b"\x1f\x8b"):
        return "gzip"
    if raw.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    # "BZh" + block size is plausible text, so bzip2 also needs the block (or end) magic after it
    if re.match(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", raw[:10]):
        return "bzip2"
    if raw.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if raw.startswith(magic):
            raise DataError(f"{path} is {name}-compressed, which hlrm cannot read; decompress it")
    return None


def _decompress(path: Path, raw: bytes, codec: str) -> bytes:
    """Undo ``codec``, refusing output beyond :data:`MAX_DECOMPRESSED_BYTES`."""
    openers: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
        "gzip": lambda f: gzip.GzipFile(fileobj=f),
        "xz": lzma.LZMAFile,
        "bzip2": bz2.BZ2File,
    }
    try:
        if codec == "zip":
            return _unzip(path, raw)
        with openers[codec](io.BytesIO(raw)) as stream:
            return _read_capped(path, stream)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress the {codec} data ({_reason(exc)})") from None


def _unzip(path: Path, raw: bytes) -> bytes:
    """The one file a zip archive holds (macOS resource forks and folders do not count)."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = [
                m
                for m in archive.infolist()
                # a damaged central directory can give a member an empty name, on which
                # ZipInfo.is_dir() raises IndexError: such a member is no file to read
                if m.filename and not m.is_dir() and not m.filename.startswith("__MACOSX/")
            ]
            if len(members) != 1:
                raise DataError(
                    f"{path}: a zip archive must hold exactly one file to read, this one holds "
                    f"{len(members)}"
                )
            if members[0].flag_bits & 0x1:
                raise DataError(f"{path}: {members[0].filename!r} in the zip archive is encrypted")
            with archive.open(members[0]) as stream:
                return _read_capped(path, stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, struct.error) as exc:
        raise DataError(f"{path}: cannot decompress the zip data ({_reason(exc)})") from None


def _read_capped(path: Path, stream: IO[bytes]) -> bytes:
    """Read ``stream`` in chunks, so a bomb is stopped at the limit instead of filling memory:
    :data:`MAX_DECOMPRESSED_BYTES`, or a third of the memory available when that is less
    (parsing needs the text and the table built from it)."""
    from hlrm.resources import available_memory

    available = available_memory()
    limit = (
        MAX_DECOMPRESSED_BYTES if available is None else min(MAX_DECOMPRESSED_BYTES, available // 3)
    )
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            why = (
                "the limit (hlrm.data.readers.MAX_DECOMPRESSED_BYTES) that guards against "
                "decompression bombs"
                if limit == MAX_DECOMPRESSED_BYTES
                else f"a third of the {_size(available or 0)} of memory available"
            )
            raise DataError(
                f"{path}: decompresses to more than {_size(limit)}, {why}; decompress it "
                f"yourself if it is genuine"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _plain_text(path: str | Path, data: bytes) -> bytes:
    """UTF-8 (or latin-1) bytes with ``\\n`` line ends and no byte order mark.

    Every text reader splits on ``\\n`` only; pyarrow, Python's csv module and ``splitlines``
    disagree about ``\\r`` and form feeds, and a lone ``\\r`` (old Mac files) broke the csv
    module. A NUL byte never occurs in the text layouts: it means a binary file, or UTF-16
    without a byte order mark, and is reported as such instead of as a puzzling parse error.
    """
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            try:
                data = data.decode(encoding).encode("utf-8")
            except UnicodeError as exc:
                raise DataError(
                    f"{path}: starts with a {encoding} byte order mark but is not valid "
                    f"{encoding} text ({_reason(exc)})"
                ) from None
            break
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(
            f"{path}:{_line_of(data, nul)}: NUL byte in what should be a text file; is it "
            f"binary, or UTF-16 text without a byte order mark?"
        )
    return data


@contextlib.contextmanager
def _enough_memory(path: str | Path) -> Iterator[None]:
    """Turn running out of memory while reading ``path`` into a :class:`DataError`."""
    try:
        yield
    except MemoryError:
        raise DataError(
            f"{path}: not enough memory to read it; free memory or read a smaller file"
        ) from None


@contextlib.contextmanager
def _csv_fields_up_to(size: int) -> Iterator[None]:
    """Let the csv module take fields of ``size`` characters: its default limit is 128 KiB,
    pyarrow (which reads the table first) has none, and a long free-text field is legitimate."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, size))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _size(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n:,} bytes"


def _reason(exc: BaseException) -> str:
    """A library's error message as one short line, fit to go inside a :class:`DataError`."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _arrow_csv(data: bytes, **options: object) -> pa.Table:
    """``pyarrow.csv.read_csv`` that also takes lines longer than its 1 MiB block.

    pyarrow splits the input into blocks and fails on a row that straddles two of them (or on a
    header longer than the first); such a row, say a long free-text column, is legitimate, so
    the read is retried with the whole file as one block.
    """
    try:
        return pacsv.read_csv(io.BytesIO(data), **options)
    except pa.ArrowInvalid as exc:
        if "block" not in str(exc):  # "straddles two block boundaries", "Empty CSV file or block"
            raise
    read_options = options.pop("read_options", None) or pacsv.ReadOptions()
    read_options.block_size = max(min(len(data) + 1, 2**31 - 1), read_options.block_size)
    return pacsv.read_csv(io.BytesIO(data), read_options=read_options, **options)


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
    ``timestamp`` must be 64-bit integers, ``rating`` a finite number; every line needs exactly
    ``columns``.
    """
    if header is not None:
        first = _first_line(data, "latin-1")
        if first.split(sep) != header:
            raise DataError(f"{path}:1: expected the header {sep.join(header)!r}")
    delimiter = sep
    if len(sep) > 1:
        data = data.replace(sep.encode(), b"\x1f")
        delimiter = "\x1f"
    types = {c: _FLOAT if c == "rating" else _INT for c in columns}
    try:
        table = _arrow_csv(
            data,
            read_options=pacsv.ReadOptions(
                column_names=columns, skip_rows=1 if header else 0, encoding="latin-1"
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
    except pa.ArrowException as exc:
        failure = _reason(exc)
    else:
        failure = "a field is empty"
        if not any(table.column(c).null_count for c in columns):
            frame = _to_frame(table)
            if "rating" not in frame or np.isfinite(frame["rating"].to_numpy()).all():
                return frame
            failure = "a rating is not a finite number"
    lines = data.decode("latin-1").split("\n")
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


def _shown(lineno: int, text: str) -> str:
    """A field quoted for an error message, except on the first line. A configuration's path
    can point at any file (a key, a password file), and a file that is not data at all fails
    on its first line: the message says where and why, and never shows that line."""
    return "" if lineno <= 1 else f" {text[:80]!r}"


def _first_line(data: bytes, encoding: str) -> str:
    """The first line, decoded and stripped, without copying the rest of a large file."""
    end = data.find(b"\n")
    return data[: end if end >= 0 else len(data)].decode(encoding, errors="replace").strip()


def _check_number(path: str | Path, lineno: int, column: str, field: str, *, integer: bool) -> None:
    """Raise unless ``field`` is what pyarrow accepts: a 64-bit integer or a finite number."""
    text = field.strip()
    if integer:
        if problem := _int64_problem(text):
            raise DataError(f"{path}:{lineno}: {column}{_shown(lineno, text)} {problem}")
        return
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{path}:{lineno}: {column}{_shown(lineno, text)} is not a number"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{lineno}: {column}{_shown(lineno, text)} is not a finite number")


def _int64_problem(text: str) -> str | None:
    """Why ``text`` is not a 64-bit integer, or None when it is one."""
    if not _INTEGER.fullmatch(text):
        return "is not an integer"
    # the length test comes first: int() refuses strings of more than 4300 digits
    if len(text.lstrip("+-0")) > 19 or not _INT64_MIN <= int(text) <= _INT64_MAX:
        return "does not fit in 64 bits"
    return None


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
        f"ratings.csv layout)"
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
    for lineno, line in enumerate(data.decode("latin-1").split("\n"), 1):
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
    for lineno, line in enumerate(data.decode("latin-1").rstrip().split("\n"), 1):
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
    """The fields as 64-bit integers: the fast ``int`` is checked, since it also takes ``1_000``
    and integers of any size."""
    try:
        ids = [int(f) for f in fields]
    except ValueError:  # not an integer, or more digits than int() converts
        ids = []
    in_range = bool(ids) and min(ids) >= _INT64_MIN and max(ids) <= _INT64_MAX
    if in_range and not any("_" in f for f in fields):
        return ids
    for field in fields:
        if problem := _int64_problem(field):
            raise DataError(f"{path}:{lineno}: {what}{_shown(lineno, field)} {problem}")
    return ids


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
def _check_roles(wanted: dict[str, str]) -> None:
    """Each role needs its own column: reading one column as both user and item (or as a rating)
    would silently produce nonsense, so it is an option error, raised before any reading."""
    role_of: dict[str, str] = {}
    for role, name in wanted.items():
        if name in role_of:
            raise ConfigError(
                f"the {role_of[name]} and {role} columns are both {name!r}; give each role its "
                f"own column (user_col, item_col, rating_col, timestamp_col)"
            )
        role_of[name] = role


def _normal_name(name: str) -> str:
    return re.sub(r"[\s_.\-]", "", name).lower()


def choose_columns(
    path: str | Path, given: dict[str, str | None], present: list[str]
) -> dict[str, str]:
    """Role → column: the given names, and for the others the first of :data:`COLUMN_NAMES`
    the file has. A detected name that a given option already takes is a conflict for the user
    and item roles (the file's ``user`` column read as items) and skipped for the others."""
    wanted = {role: name for role, name in given.items() if name is not None}
    by_name: dict[str, str] = {}
    for column in present:
        by_name.setdefault(_normal_name(column), column)
    for role, candidates in COLUMN_NAMES.items():
        if role in wanted:
            continue
        found = [by_name[n] for n in map(_normal_name, candidates) if n in by_name]
        if role not in _REQUIRED_ROLES:
            found = [column for column in found if column not in wanted.values()]
        if found:
            wanted[role] = found[0]
        elif role in _REQUIRED_ROLES:
            common = ", ".join(candidates[:4])
            raise DataError(
                f"{path}: no {role} column found (looked for {common}, ...); name it with "
                f"{role}_col{_listed(present)}"
            )
    wanted = {role: wanted[role] for role in COLUMN_NAMES if role in wanted}
    _check_roles(wanted)
    _check_columns(path, wanted, present)
    return wanted


def _read_delimited(
    path: str | Path, data: bytes, sep: str, given: dict[str, str | None]
) -> pd.DataFrame:
    """A quoted CSV/TSV with a header row; only the columns of the roles are converted."""
    delimiter = sep
    if len(sep.encode()) > 1:  # pyarrow and the csv module take a one-byte delimiter only
        data = data.replace(sep.encode(), b"\x1f")
        delimiter = "\x1f"
    header = _header(path, data, delimiter)
    wanted = choose_columns(path, given, header)
    types = {wanted["user"]: pa.string(), wanted["item"]: pa.string()}
    if "rating" in wanted:
        types[wanted["rating"]] = _FLOAT
    try:
        table = _arrow_csv(
            data,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=list(wanted.values()),
                strings_can_be_null=True,
            ),
        )
        raw = table.to_pandas()
    except pa.ArrowException as exc:
        _scan_delimited(path, data, delimiter, header, wanted)
        raise DataError(f"{path}: cannot parse ({_reason(exc)})") from None
    try:
        return _standardize(path, raw, wanted)
    except DataError:
        _scan_delimited(path, data, delimiter, header, wanted)
        raise


def _header(path: str | Path, data: bytes, delimiter: str) -> list[str]:
    """The column names; pyarrow decodes them strictly as UTF-8, so the check here does too."""
    end = data.find(b"\n")
    line = data[: end if end >= 0 else len(data)]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}:1: the header is not UTF-8 text (byte 0x{line[exc.start]:02x}); save the "
            f"file as UTF-8"
        ) from None
    try:
        with _csv_fields_up_to(len(text)):
            return next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error as exc:
        raise DataError(f"{path}:1: cannot parse the header ({_reason(exc)})") from None


def _scan_delimited(
    path: str | Path, data: bytes, delimiter: str, header: list[str], wanted: dict[str, str]
) -> None:
    """Raise for the first row that breaks the table (wrong width, empty id, bad number).

    Bytes that are not UTF-8 decode to lone surrogates, so they are reported where they matter
    (in a column that is read) and ignored elsewhere, as pyarrow ignores them.
    """
    text = data.decode("utf-8", errors="surrogateescape")
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    position = {key: header.index(name) for key, name in wanted.items()}
    try:
        with _csv_fields_up_to(len(text)):
            next(rows)
            for row in rows:
                if row:
                    _check_row(path, rows.line_num, row, len(header), position, wanted)
    except csv.Error as exc:
        raise DataError(f"{path}:{rows.line_num}: not valid CSV ({_reason(exc)})") from None


def _check_row(
    path: str | Path,
    lineno: int,
    row: list[str],
    width: int,
    position: dict[str, int],
    wanted: dict[str, str],
) -> None:
    if len(row) != width:
        raise DataError(
            f"{path}:{lineno}: expected {width} fields like the header, found {len(row)}"
        )
    for key, index in position.items():
        value = row[index]
        if bad := _NOT_UTF8.search(value):
            raise DataError(
                f"{path}:{lineno}: {wanted[key]!r} is not UTF-8 text "
                f"(byte 0x{ord(bad.group()) - 0xDC00:02x}); save the file as UTF-8"
            )
        value = value.strip()
        if not value:
            raise DataError(f"{path}:{lineno}: empty {wanted[key]!r}")
        if key == "rating":
            _check_number(path, lineno, wanted[key], value, integer=False)


def _read_parquet(path: str | Path, data: bytes, given: dict[str, str | None]) -> pd.DataFrame:
    """Only the ``wanted`` columns are read: less memory, and no trouble from the others.

    The columns are taken as the parquet schema names them, ignoring the pandas metadata a
    pandas writer adds (it can rename columns, and a damaged copy of it cannot be trusted), and
    fully validated, since parquet readers do not check that strings are UTF-8.
    """
    try:
        source = pq.ParquetFile(io.BytesIO(data))
        wanted = choose_columns(path, given, [str(name) for name in source.schema_arrow.names])
        table = source.read(columns=list(wanted.values()))
        table.validate(full=True)
        frame = table.to_pandas(ignore_metadata=True)
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({_reason(exc)})") from None
    return _standardize(path, frame, wanted)


def _listed(present: list[str]) -> str:
    """``; its columns are: ...`` for a table, nothing for a file whose header did not split
    into columns: that "header" is the first line of a file that may not be data at all (see
    :func:`_shown`), and naming the separator helps more."""
    if len(present) < 2:
        return "; its first line has no separator, so it is no table with these settings (sep)"
    listed = ", ".join(repr(c[:80]) for c in present[:50])
    more = f" and {len(present) - 50} more" if len(present) > 50 else ""
    return f"; its columns are: {listed}{more}"


def _check_columns(path: str | Path, wanted: dict[str, str], present: list[str]) -> None:
    for key, name in wanted.items():
        if name not in present:
            raise DataError(f"{path}: no column {name!r} (the {key} column){_listed(present)}")
        if present.count(name) > 1:
            raise DataError(
                f"{path}: {present.count(name)} columns are named {name!r}, so the {key} column "
                f"is ambiguous"
            )


def _standardize(path: str | Path, raw: pd.DataFrame, wanted: dict[str, str]) -> pd.DataFrame:
    """Rename to the standard columns and fix their types; row numbers count data rows from 1."""
    out = pd.DataFrame(index=pd.RangeIndex(len(raw)))
    for key in ("user", "item"):
        out[key] = _ids(path, raw[wanted[key]], wanted[key])
    if "rating" in wanted:
        rating = pd.to_numeric(raw[wanted["rating"]], errors="coerce")
        _first_missing(path, rating, wanted["rating"], "is not a number")
        values = rating.to_numpy(dtype=np.float64)
        _first_bad(path, ~np.isfinite(values), wanted["rating"], "is not a finite number")
        out["rating"] = values
    if "timestamp" in wanted:
        out["timestamp"] = _timestamps(path, raw[wanted["timestamp"]], wanted["timestamp"])
    out.attrs["columns"] = dict(wanted)
    return out


def _ids(path: str | Path, column: pd.Series, name: str) -> np.ndarray:
    """Integer ids stay integers; anything else (including ``007``) stays a string."""
    _first_missing(path, column, name, "is empty")
    integer = pd.api.types.is_integer_dtype(column.dtype)
    if integer and (column.empty or column.max() <= _INT64_MAX):  # uint64 beyond stays text
        return column.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            integral = (values % 1 == 0) & (values >= -(2.0**63)) & (values < 2.0**63)
        if integral.all():
            return values.astype(np.int64)  # integral floats (e.g. from a parquet writer)
    try:
        strings = column.astype(str).str.strip()
    except UnicodeDecodeError:
        raise DataError(f"{path}: {name!r} holds bytes that are not UTF-8 text") from None
    text = pa.array(strings.to_numpy(dtype=object), type=pa.string())
    blank = pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
    _first_bad(path, blank, name, "is empty")
    if pc.all(pc.match_substring_regex(text, _CANONICAL_INT)).as_py():
        return pc.cast(text, _INT).to_numpy()
    return np.asarray(text.to_pylist(), dtype=str)


def _timestamps(path: str | Path, column: pd.Series, name: str) -> np.ndarray:
    """Numbers are taken as epoch seconds; dates and date-times (UTC unless zoned) become them."""
    if pd.api.types.is_timedelta64_dtype(column.dtype):
        raise DataError(f"{path}: {name!r} holds durations, not points in time")
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        moments = pd.to_datetime(column, utc=True)
    else:
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().all():
            values = numeric.to_numpy()
            if values.dtype.kind == "f":
                with np.errstate(invalid="ignore"):
                    fits = np.isfinite(values) & (values >= -(2.0**63)) & (values < 2.0**63)
            elif values.dtype.kind == "u":
                fits = values <= _INT64_MAX
            else:
                fits = np.ones(len(values), dtype=bool)
            _first_bad(path, ~fits, name, "is not a number of seconds that fits in 64 bits")
            return values.astype(np.int64)
        try:
            with warnings.catch_warnings():
                # When no format can be inferred from the first value, pandas parses value by
                # value and warns; the values it cannot parse are reported below, in one line.
                warnings.filterwarnings("ignore", "Could not infer format", UserWarning)
                moments = pd.to_datetime(column, errors="coerce", utc=True)
        except (ValueError, TypeError, OverflowError) as exc:
            raise DataError(
                f"{path}: {name!r} is not a column of numbers or dates ({_reason(exc)})"
            ) from None
    _first_missing(path, moments, name, "is not a number or a date")
    # via whole seconds in numpy: subtracting a nanosecond epoch overflows beyond 1677-2262
    seconds = moments.dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    return seconds.astype(np.int64)


def _first_missing(path: str | Path, values: pd.Series, name: str, problem: str) -> None:
    _first_bad(path, pd.isna(values).to_numpy(), name, problem)


def _first_bad(path: str | Path, bad: np.ndarray, name: str, problem: str) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        raise DataError(f"{path}: row {int(rows[0]) + 1}: {name!r} {problem}")
