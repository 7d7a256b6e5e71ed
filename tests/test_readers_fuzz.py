"""Fuzzing the readers: whatever a file holds, reading it returns well-formed interactions or
raises an HlrmError with a one-line message, never another exception (the CLI would print a
traceback); then one regression test per failure the fuzzing found."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hlrm.data import readers
from hlrm.data.readers import FORMATS, read_interactions, read_titles
from hlrm.errors import ConfigError, DataError, HlrmError

# database=None: nothing is written to .hypothesis/ in the working tree
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CODECS = ("", "gzip", "xz", "bzip2", "zip")
LINE_ENDS = ("\n", "\r\n", "\r")
TITLE_FILES = ("u.item", "movies.dat", "movies.csv", "artists.dat")
U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
CSV_OPTIONS = {
    "user_col": "uid",
    "item_col": "song",
    "rating_col": "stars",
    "timestamp_col": "when",
}
#: (file name, format, content, options): one valid file per layout, the seeds of the mutations
SAMPLES = [
    ("u.data", "movielens", U_DATA, {}),
    ("ratings.dat", "movielens", "1::1193::5::978300760\n2::1::3::978300761\n", {}),
    ("ratings.csv", "movielens", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n", {}),
    ("train.txt", "lightgcn", "0 5 6 7\n1\n2 5\n", {}),
    ("users.dat", "citeulike", "2 10 11\n0\n1 10\n", {}),
    ("user_artists.dat", "hetrec", "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n", {}),
    ("x.rating", "diffnet", "13446\t6863\t1\n9485\t23761\t1\n", {}),
    (
        "mine.csv",
        "csv",
        'uid,song,stars,when,extra\nalice,7,4.5,2021-01-01,"a, b"\n12,007,3,2021-01-02,x\n',
        CSV_OPTIONS,
    ),
    ("a.tsv", "tsv", "user\titem\n1\t10\n2\t20\n", {}),
    ("b.csv", "csv", "user::item::ts\n1::2::100\n", {"sep": "::", "timestamp_col": "ts"}),
]
#: Bytes that tend to break parsers, spliced into files by the mutations.
NASTY = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\t",
    b",",
    b"::",
    b'"',
    b"inf",
    b"nan",
    b"-",
    b"9" * 25,
    b"\xe9",
    b"\xff\xfe",
    b"\x00",
    b"1e400",
    b" ",
    b"_",
    b"\xef\xbb\xbf",
    b"x" * 200_000,
]


def compress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.compress(data)
    if codec == "xz":
        return lzma.compress(data)
    if codec == "bzip2":
        return bz2.compress(data)
    if codec == "zip":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("data", data)
        return out.getvalue()
    return data


def outcome(path: Path, fmt: str, **options: object) -> pd.DataFrame | str:
    """The frame read, or the error message (with the path taken out); anything else fails."""
    try:
        frame = read_interactions(path, fmt, **options)
    except HlrmError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not a one-line message: {message!r}"
        return message.replace(str(path), "<file>")
    assert_well_formed(frame)
    return frame


def assert_well_formed(frame: pd.DataFrame) -> None:
    assert not frame.empty
    assert list(frame.columns[:2]) == ["user", "item"]
    assert set(frame.columns) <= {"user", "item", "rating", "timestamp"}
    for key in ("user", "item"):
        assert frame[key].dtype == np.int64 or pd.api.types.is_string_dtype(frame[key].dtype)
    if "rating" in frame:
        assert frame["rating"].dtype == np.float64
        assert np.isfinite(frame["rating"].to_numpy()).all()
    if "timestamp" in frame:
        assert frame["timestamp"].dtype == np.int64


def mutated(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """``data`` after each (kind, position, value) edit: overwrite, delete, splice, truncate."""
    out = bytearray(data)
    for kind, position, value in edits:
        at = position % (len(out) + 1)
        if kind == 0 and at < len(out):
            out[at] = value
        elif kind == 1 and at < len(out):
            del out[at]
        elif kind == 2:
            out[at:at] = NASTY[value % len(NASTY)]
        elif kind == 3:
            del out[at:]
    return bytes(out)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ---- properties ----------------------------------------------------------------------------------
@FUZZ
@given(
    data=st.binary(max_size=400),
    fmt=st.sampled_from(FORMATS),
    codec=st.sampled_from(CODECS),
    suffix=st.sampled_from(["", ".csv", ".gz", ".xz", ".bz2", ".zip", ".parquet"]),
)
def test_arbitrary_bytes(workdir: Path, data: bytes, fmt: str, codec: str, suffix: str) -> None:
    path = workdir / f"bytes{suffix}"
    path.write_bytes(compress(data, codec))
    outcome(path, fmt)


@FUZZ
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2**16), st.integers(0, 255)), max_size=5
    ),
    codec=st.sampled_from(CODECS),
    compress_first=st.booleans(),
)
def test_mutated_valid_files(
    workdir: Path,
    sample: tuple[str, str, str, dict],
    edits: list[tuple[int, int, int]],
    codec: str,
    compress_first: bool,
) -> None:
    """Near-valid files (and damaged compressed streams) find the corners random bytes miss."""
    name, fmt, text, options = sample
    data = text.encode()
    if compress_first:
        data = mutated(compress(data, codec), edits)
    else:
        data = compress(mutated(data, edits), codec)
    path = workdir / name
    path.write_bytes(data)
    outcome(path, fmt, **options)


FIELDS = st.one_of(
    st.sampled_from(
        [
            "1",
            "2",
            "10",
            "-3",
            "007",
            "1.5",
            "4",
            "inf",
            "-inf",
            "nan",
            "",
            " ",
            "abc",
            "é",
            '"',
            '"a,b"',
            "1e400",
            "9" * 25,
            "2021-01-01",
            "9999-12-31",
            "user",
            "item",
            "rating",
            "timestamp",
            "userId",
            "movieId",
            "userID",
            "artistID",
            "weight",
            "1_000",
            "\x00",
        ]
    ),  # fmt: skip
    st.text(max_size=4),
)
ROLE_COLUMNS = st.sampled_from([None, "user", "item", "rating", "timestamp", "r"])


@FUZZ
@given(
    rows=st.lists(st.lists(FIELDS, max_size=5), max_size=6),
    sep=st.sampled_from([",", "\t", "::", " ", ";", "|", "§"]),
    line_end=st.sampled_from(LINE_ENDS),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]),
    codec=st.sampled_from(CODECS),
    fmt=st.sampled_from(FORMATS),
    columns=st.tuples(ROLE_COLUMNS, ROLE_COLUMNS, ROLE_COLUMNS, ROLE_COLUMNS),
    pass_sep=st.booleans(),
)
def test_generated_tables(
    workdir: Path,
    rows: list[list[str]],
    sep: str,
    line_end: str,
    encoding: str,
    codec: str,
    fmt: str,
    columns: tuple[str | None, ...],
    pass_sep: bool,
) -> None:
    """Table-shaped text in any separator, line ending, encoding and compression, read as any
    layout with any column options (including one column in two roles)."""
    text = line_end.join(sep.join(row) for row in rows)
    path = workdir / "table.txt"
    path.write_bytes(compress(text.encode(encoding, errors="replace"), codec))
    options: dict[str, object] = {}
    if fmt in ("csv", "tsv", "parquet"):
        names = ("user_col", "item_col", "rating_col", "timestamp_col")
        options = {k: v for k, v in zip(names, columns, strict=True) if v is not None}
        if pass_sep and fmt != "parquet":
            options["sep"] = sep
    outcome(path, fmt, **options)


SAFE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\ufeff"), max_size=4
)


@FUZZ
@given(
    rows=st.lists(st.lists(st.one_of(FIELDS, SAFE_TEXT), max_size=4), max_size=5),
    sep=st.sampled_from([",", "\t", "::", " "]),
    fmt=st.sampled_from([f for f in FORMATS if f != "parquet"]),
    line_end=st.sampled_from(LINE_ENDS),
    final_newline=st.booleans(),
    wrapping=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]),
    codec=st.sampled_from(CODECS),
)
def test_line_ending_encoding_and_compression_change_nothing(
    workdir: Path,
    rows: list[list[str]],
    sep: str,
    fmt: str,
    line_end: str,
    final_newline: bool,
    wrapping: str,
    codec: str,
) -> None:
    """Whatever the content, the same table saved with CR or CRLF line ends, a byte order mark,
    UTF-16/32 or compression reads exactly as the plain UTF-8 LF file (same frame or same error)."""
    lines = [sep.join(r) for r in rows if "\r" not in sep.join(r) and "\n" not in sep.join(r)]
    plain = "\n".join(lines) + ("\n" if final_newline else "")
    assume(not plain.startswith("\ufeff"))  # the variant's mark would be taken as the baseline's
    # UTF-16 LE "\x00..." starts with FF FE 00 00, the UTF-32 LE byte order mark
    assume(not (wrapping == "utf-16" and plain.startswith("\x00")))
    options = {"sep": sep} if fmt in ("csv", "tsv") else {}
    baseline_path = workdir / "plain" / "table"
    variant_path = workdir / "variant" / "table"
    for path in (baseline_path, variant_path):
        path.parent.mkdir(exist_ok=True)
    baseline_path.write_bytes(plain.encode("utf-8"))
    variant = plain.replace("\n", line_end).encode(wrapping)
    variant_path.write_bytes(compress(variant, codec))
    expected = outcome(baseline_path, fmt, **options)
    got = outcome(variant_path, fmt, **options)
    if isinstance(expected, str):
        assert got == expected
    else:
        assert isinstance(got, pd.DataFrame), got
        pd.testing.assert_frame_equal(got, expected)


@FUZZ
@given(
    name=st.sampled_from(TITLE_FILES),
    data=st.one_of(
        st.binary(max_size=200),
        st.lists(st.lists(FIELDS, max_size=4), max_size=5).map(
            lambda rows: "\r".join("|".join(r) for r in rows).encode("utf-8", errors="replace")
        ),
    ),
    codec=st.sampled_from(CODECS),
)
def test_title_files(workdir: Path, name: str, data: bytes, codec: str) -> None:
    path = workdir / name
    path.write_bytes(compress(data, codec))
    try:
        titles = read_titles(path)
    except HlrmError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(title, str) for title in titles.values())


PARQUET_COLUMNS = st.sampled_from(
    [
        [1, 2],
        [1.0, 2.0],
        [1.5, float("inf")],
        [float("nan"), 1.0],
        [1e300, -1e300],
        ["a", ""],
        ["2021-01-01", "x"],
        [b"a", b"\xff"],
        [True, False],
        [None, None],
        [[1], [2]],
        pd.array([1, None], dtype="Int64"),
        np.array([2**64 - 1, 1], dtype=np.uint64),
        pd.to_datetime(["2021-01-01", "2262-05-01"]),
        pd.to_timedelta([1, 2], unit="s"),
        pd.Categorical(["a", "b"]),
    ]
)


@FUZZ
@given(
    columns=st.tuples(PARQUET_COLUMNS, PARQUET_COLUMNS, PARQUET_COLUMNS, PARQUET_COLUMNS),
    rating_col=st.sampled_from([None, "r", "user"]),
    timestamp_col=st.sampled_from([None, "t", "item"]),
)
def test_parquet_columns_of_any_type(
    workdir: Path,
    columns: tuple[object, ...],
    rating_col: str | None,
    timestamp_col: str | None,
) -> None:
    frame = pd.DataFrame(dict(zip(["user", "item", "r", "t"], columns, strict=True)))
    path = workdir / "frame.parquet"
    try:
        frame.to_parquet(path)
    except Exception:  # noqa: BLE001 - a column pyarrow cannot write is not the reader's business
        return
    outcome(path, "parquet", rating_col=rating_col, timestamp_col=timestamp_col)


# ---- regressions: the failures the fuzzing found -------------------------------------------------
@pytest.mark.parametrize(
    ("name", "fmt", "text", "options"),
    SAMPLES,
    ids=[f"{s[1]}-{s[0]}" for s in SAMPLES],
)
def test_cr_only_line_endings_read_like_lf(
    tmp_path: Path, name: str, fmt: str, text: str, options: dict
) -> None:
    """Old-Mac files (``\\r`` without ``\\n``) crashed the csv module with ``_csv.Error``."""
    lf = tmp_path / "lf" / name
    cr = tmp_path / "cr" / name
    lf.parent.mkdir()
    cr.parent.mkdir()
    lf.write_bytes(text.encode())
    cr.write_bytes(text.replace("\n", "\r").encode())
    pd.testing.assert_frame_equal(
        read_interactions(cr, fmt, **options), read_interactions(lf, fmt, **options)
    )


def test_cr_only_title_file(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_bytes(b'movieId,title\r3,"Grumpier Old Men, The (1995)"\r4,Heat\r')
    assert read_titles(path) == {3: "Grumpier Old Men, The (1995)", 4: "Heat"}


@pytest.mark.parametrize("codec", ["gzip", "xz", "bzip2", "zip"])
def test_compression_is_recognised_by_content_not_name(tmp_path: Path, codec: str) -> None:
    """A gzip/xz file named ``.csv`` crashed with ``_csv.Error``; now its magic bytes count."""
    path = tmp_path / "ratings.csv"
    path.write_bytes(compress(b"user,item\n1,2\n3,4\n", codec))
    assert read_interactions(path, "csv").to_dict("list") == {"user": [1, 3], "item": [2, 4]}
    u_data = tmp_path / "u.data"
    u_data.write_bytes(compress(U_DATA.encode(), codec))
    assert read_interactions(u_data, "movielens")["user"].tolist() == [196, 186, 22]
    titles = tmp_path / "movies.csv"
    titles.write_bytes(compress(b"movieId,title\n3,Heat\n", codec))
    assert read_titles(titles) == {3: "Heat"}


def test_compression_problems_are_data_errors(tmp_path: Path) -> None:
    cases = {
        "plain.gz": (b"user,item\n1,2\n", r"name ends in \.gz but the content is not gzip"),
        "cut.csv": (gzip.compress(b"user,item\n1,2\n" * 100)[:-20], "cannot decompress the gzip"),
        "bad.xz": (b"\xfd7zXZ\x00garbage", "cannot decompress the xz"),
        "z.csv": (b"\x28\xb5\x2f\xfd" + b"\x00" * 20, "zstd-compressed"),
    }
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=pattern):
            read_interactions(tmp_path / name, "csv")
    two = io.BytesIO()
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", "user,item\n1,2\n")
        archive.writestr("b.csv", "user,item\n1,2\n")
    (tmp_path / "two.zip").write_bytes(two.getvalue())
    with pytest.raises(DataError, match="exactly one file.*holds 2"):
        read_interactions(tmp_path / "two.zip", "csv")


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "MAX_DECOMPRESSED_BYTES", 10_000)
    path = tmp_path / "u.data.gz"
    path.write_bytes(gzip.compress(U_DATA.encode() * 1000))
    with pytest.raises(DataError, match=r"decompresses to more than 10,000 bytes.*bombs"):
        read_interactions(path, "movielens")


def test_running_out_of_memory_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: object) -> bytes:
        raise MemoryError

    monkeypatch.setattr(readers, "_decompress", exhausted)
    path = tmp_path / "u.data.xz"
    path.write_bytes(lzma.compress(U_DATA.encode()))
    with pytest.raises(DataError, match="not enough memory to read it"):
        read_interactions(path, "movielens")
    titles = tmp_path / "movies.dat.xz"
    titles.write_bytes(lzma.compress(b"2::Jumanji (1995)::Adventure\n"))
    with pytest.raises(DataError, match="not enough memory"):
        read_titles(titles)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"item_col": "user"}, "the user and item columns are both 'user'"),
        ({"user_col": "item"}, "the user and item columns are both 'item'"),
        ({"rating_col": "user"}, "the user and rating columns are both 'user'"),
        ({"rating_col": "t", "timestamp_col": "t"}, "the rating and timestamp columns are both"),
    ],
)
def test_one_column_in_two_roles_is_a_config_error(
    tmp_path: Path, options: dict, pattern: str
) -> None:
    """This raised ``AttributeError`` ('DataFrame' object has no attribute 'dtype')."""
    path = tmp_path / "m.csv"
    path.write_text("user,item,t\n1,2,3\n")
    with pytest.raises(ConfigError, match=pattern):
        read_interactions(path, "csv", **options)
    frame = tmp_path / "m.parquet"
    pd.DataFrame({"user": [1], "item": [2], "t": [3]}).to_parquet(frame)
    with pytest.raises(ConfigError, match=pattern):
        read_interactions(frame, "parquet", **options)


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e400", "nan"])
def test_non_finite_ratings_are_rejected(tmp_path: Path, value: str) -> None:
    """An infinite rating used to be accepted silently (and NaN gave a vague message)."""
    path = tmp_path / "m.csv"
    path.write_text(f"user,item,r\n1,2,3\n1,3,{value}\n")
    with pytest.raises(DataError, match=rf"m\.csv:3: r '{value}' is not a finite number"):
        read_interactions(path, "csv", rating_col="r")
    u_data = tmp_path / "u.data"
    u_data.write_text(f"1\t2\t3\t4\n1\t3\t{value}\t5\n")
    with pytest.raises(DataError, match=rf"u\.data:2: rating '{value}' is not a finite"):
        read_interactions(u_data, "movielens")
    frame = tmp_path / "m.parquet"
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "r": [1.0, float(value)]}).to_parquet(frame)
    with pytest.raises(DataError, match=r"row 2: 'r' is not a (finite )?number"):
        read_interactions(frame, "parquet", rating_col="r")


def test_timestamps_beyond_64_bits_or_nanosecond_range(tmp_path: Path) -> None:
    """Huge numbers became -2**63 with a RuntimeWarning; dates outside 1677-2262 crashed with
    OutOfBoundsDatetime."""
    path = tmp_path / "m.csv"
    path.write_text("user,item,t\n1,2,0001-01-01\n3,4,9999-12-31\n")
    frame = read_interactions(path, "csv", timestamp_col="t")
    assert frame["timestamp"].tolist() == [-62135596800, 253402214400]
    for value in ["1e30", "inf", "18446744073709551615"]:
        path.write_text(f"user,item,t\n1,2,{value}\n")
        with pytest.raises(DataError, match="row 1: 't' is not a number of seconds that fits"):
            read_interactions(path, "csv", timestamp_col="t")
    durations = tmp_path / "d.parquet"
    pd.DataFrame({"user": [1], "item": [2], "t": pd.to_timedelta([1], unit="s")}).to_parquet(
        durations
    )
    with pytest.raises(DataError, match="durations, not points in time"):
        read_interactions(durations, "parquet", timestamp_col="t")


@pytest.mark.parametrize(
    ("name", "fmt", "text", "pattern"),
    [
        # the bad value is on line 2: a first line is never quoted (it may not be data at all)
        ("train.txt", "lightgcn", "0 1\n1 99999999999999999999\n", r"train\.txt:2: id '9+' does"),
        ("users.dat", "citeulike", "1 5\n1 99999999999999999999\n", r"users\.dat:2: field '9+'"),
        (
            "u.data",
            "movielens",
            "1\t1\t2\t3\n99999999999999999999\t1\t2\t3\n",
            r"u\.data:2: user '9+' does",
        ),
        ("train.txt", "lightgcn", "0 1\n1 " + "7" * 5000 + "\n", r"train\.txt:2: id '7+' does"),
        (
            "u.data",
            "movielens",
            "1\t1\t2\t3\n1\t2\t3\t" + "7" * 5000 + "\n",
            r"u\.data:2: timestamp '7+'",
        ),
        ("train.txt", "lightgcn", "0 1\n1 1_000\n", r"train\.txt:2: id '1_000' is not an integer"),
        ("train.txt", "lightgcn", "0 1_000\n", r"train\.txt:1: id is not an integer"),
    ],
)
def test_integers_beyond_64_bits(
    tmp_path: Path, name: str, fmt: str, text: str, pattern: str
) -> None:
    """These raised OverflowError, or ValueError from int()'s 4300-digit limit."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=pattern):
        read_interactions(path, fmt)


def test_nul_bytes_and_utf16(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"user,item\n1,2\n3,\x004\n")
    with pytest.raises(DataError, match=r"m\.csv:3: NUL byte.*UTF-16 text without a byte order"):
        read_interactions(path, "csv")
    path.write_bytes("user\titem\r\n1\t2\r\n".encode("utf-16"))  # Excel's "Unicode text"
    assert read_interactions(path, "tsv").to_dict("list") == {"user": [1], "item": [2]}
    path.write_bytes(b"\xff\xfeu\x00s\x00e")  # a UTF-16 byte order mark, then an odd byte
    with pytest.raises(DataError, match="byte order mark but is not valid utf-16"):
        read_interactions(path, "csv")


def test_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"user,item\n1,2\n\xe9,3\n")
    with pytest.raises(DataError, match=r"m\.csv:3: 'user' is not UTF-8 text \(byte 0xe9\)"):
        read_interactions(path, "csv")
    path.write_bytes(b"us\xe9r,item\n1,2\n")
    with pytest.raises(DataError, match=r"m\.csv:1: the header is not UTF-8 text"):
        read_interactions(path, "csv")
    path.write_bytes(b"user,item,note\n1,2,caf\xe9\n")  # a column that is not read may be latin-1
    assert read_interactions(path, "csv").to_dict("list") == {"user": [1], "item": [2]}


def test_long_lines(tmp_path: Path) -> None:
    """A field over 128 KiB raised ``_csv.Error`` (field larger than field limit), and a row
    over pyarrow's 1 MiB block made a valid file unreadable."""
    long_field = "x" * 3_000_000
    path = tmp_path / "m.csv"
    path.write_text("user,item,note\n" + "1,2,a\n" * 1000 + f"3,4,{long_field}\n5,6,b\n")
    assert read_interactions(path, "csv")["user"].tolist()[-2:] == [3, 5]
    path.write_text(f"user,item,note\n1,2,{long_field}\n3,4\n")
    with pytest.raises(DataError, match=r"m\.csv:3: expected 3 fields like the header, found 2"):
        read_interactions(path, "csv")
    path.write_text(f"user,item,{long_field}\n1,2,3\n")
    assert read_interactions(path, "csv")["item"].tolist() == [2]


def test_header_and_id_problems(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("user,user,item\n1,2,3\n")
    with pytest.raises(DataError, match="2 columns are named 'user', so the user column is"):
        read_interactions(path, "csv")
    path.write_text("user,item\n1,2\n   ,3\n")
    with pytest.raises(DataError, match=r"m\.csv:3: empty 'user'"):
        read_interactions(path, "csv")
    for sep in ['"', "\n", ",\r"]:
        with pytest.raises(ConfigError, match="cannot contain a quote or a line break"):
            read_interactions(path, "csv", sep=sep)
    path.write_bytes("user§item\n1§2\n".encode())  # a separator that is not one byte in UTF-8
    assert read_interactions(path, "csv", sep="§").to_dict("list") == {"user": [1], "item": [2]}


def test_awkward_parquet_columns(tmp_path: Path) -> None:
    """Nullable integers with a gap raised ValueError, integer column names KeyError, bytes ids
    UnicodeDecodeError; uint64 ids beyond int64 and huge float ids wrapped around silently."""
    path = tmp_path / "x.parquet"
    pd.DataFrame({"user": pd.array([1, None], dtype="Int64"), "item": [1, 2]}).to_parquet(path)
    with pytest.raises(DataError, match="row 2: 'user' is empty"):
        read_interactions(path, "parquet")
    pd.DataFrame({0: [1, 2], 1: [3, 4]}).to_parquet(path)
    assert read_interactions(path, "parquet", user_col="0", item_col="1")["item"].tolist() == [3, 4]
    pd.DataFrame({"user": [b"a", b"\xff"], "item": [1, 2]}).to_parquet(path)
    with pytest.raises(DataError, match="not UTF-8"):
        read_interactions(path, "parquet")
    big = np.array([2**64 - 1, 2], dtype=np.uint64)
    pd.DataFrame({"user": big, "item": [1e300, 2.0]}).to_parquet(path)
    frame = read_interactions(path, "parquet")
    assert frame["user"].tolist() == ["18446744073709551615", "2"]
    assert frame["item"].tolist() == ["1e+300", "2.0"]


def test_titles_that_are_not_csv(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="NUL byte"):
        read_titles(path)
    path.write_bytes(b'movieId,title\n1,"' + b"x" * 300_000 + b'"\n')
    assert len(read_titles(path)[1]) == 300_000


def test_a_zip_member_with_an_empty_name_is_one_clear_error(tmp_path: Path) -> None:
    # The case test_mutated_valid_files found: one byte of the central directory zeroed leaves a
    # member named "", on which zipfile's is_dir() raises IndexError.
    text = 'uid,song,stars,when,extra\nalice,7,4.5,2021-01-01,"a, b"\n12,007,3,2021-01-02,x\n'
    path = tmp_path / "mine.csv"
    path.write_bytes(mutated(compress(text.encode(), "zip"), [(0, 149, 0)]))
    with pytest.raises(DataError):
        read_interactions(path, "csv", user_col="uid", item_col="song")
