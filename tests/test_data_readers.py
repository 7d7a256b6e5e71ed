"""Readers: every format on tiny files (plain and compressed), and one clear error per bad input."""

from __future__ import annotations

import gzip
import lzma
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hlrm.data.readers import read_interactions, read_titles
from hlrm.errors import ConfigError, DataError

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"


def write(path: Path, text: str, encoding: str = "latin-1") -> Path:
    data = text.encode(encoding)
    if path.name.endswith(".xz"):
        data = lzma.compress(data)
    elif path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


# ---- formats -------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".xz", ".gz"])
def test_movielens_u_data_plain_and_compressed(tmp_path: Path, suffix: str) -> None:
    df = read_interactions(write(tmp_path / f"u.data{suffix}", U_DATA), "movielens")
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert df["user"].tolist() == [196, 186, 22]
    assert df["rating"].dtype == np.float64 and df["timestamp"].dtype == np.int64
    assert df["timestamp"].iloc[0] == 881250949


def test_movielens_ratings_dat_with_and_without_timestamp(tmp_path: Path) -> None:
    full = read_interactions(
        write(tmp_path / "ratings.dat", "1::1193::5::978300760\n"), "movielens"
    )
    assert full.iloc[0].tolist() == [1, 1193, 5.0, 978300760]
    bare = write(tmp_path / "ratings_no_timestamp.dat.xz", "1::1::5\n1::48::5\n2::21::1\n")
    df = read_interactions(bare, "movielens")
    assert list(df.columns) == ["user", "item", "rating"]
    assert df["item"].tolist() == [1, 48, 21]


def test_movielens_ratings_csv_keeps_half_stars(tmp_path: Path) -> None:
    text = "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n"
    df = read_interactions(write(tmp_path / "ratings.csv", text), "movielens")
    assert df["rating"].tolist() == [3.5, 4.0]
    assert df["user"].dtype == np.int64


def test_lightgcn_allows_a_user_without_items(tmp_path: Path) -> None:
    df = read_interactions(write(tmp_path / "train.txt", "0 5 6 7\n1\n2 5\n"), "lightgcn")
    assert df["user"].tolist() == [0, 0, 0, 2]
    assert df["item"].tolist() == [5, 6, 7, 5]


def test_citeulike_user_is_the_line_number(tmp_path: Path) -> None:
    df = read_interactions(write(tmp_path / "users.dat.xz", "2 10 11\n0\n1 10\n"), "citeulike")
    assert df["user"].tolist() == [0, 0, 2]
    assert df["item"].tolist() == [10, 11, 10]


def test_hetrec_crlf_header_no_final_newline(tmp_path: Path) -> None:
    text = "userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t52\t11690"
    df = read_interactions(write(tmp_path / "user_artists.dat", text), "hetrec")
    assert df.to_dict("list") == {"user": [2, 2], "item": [51, 52], "rating": [13883.0, 11690.0]}


def test_diffnet_crlf(tmp_path: Path) -> None:
    df = read_interactions(
        write(tmp_path / "x.rating", "13446\t6863\t1\r\n9485\t23761\t1\r\n"), "diffnet"
    )
    assert df["user"].tolist() == [13446, 9485] and df["item"].tolist() == [6863, 23761]


def test_csv_columns_by_name_and_id_types(tmp_path: Path) -> None:
    text = 'uid,song,stars,when,extra\nalice,7,4.5,2021-01-01,"a, b"\n12,007,3,2021-01-02,x\n'
    df = read_interactions(
        write(tmp_path / "mine.csv", text, "utf-8"),
        "csv",
        user_col="uid",
        item_col="song",
        rating_col="stars",
        timestamp_col="when",
    )
    # mixed ids stay strings; "007" is not a canonical integer so the item ids stay strings too
    assert df["user"].tolist() == ["alice", "12"]
    assert df["item"].tolist() == ["7", "007"]
    assert df["rating"].tolist() == [4.5, 3.0]
    assert df["timestamp"].tolist() == [1609459200, 1609545600]


def test_tsv_integer_ids_and_custom_separator(tmp_path: Path) -> None:
    df = read_interactions(write(tmp_path / "a.tsv", "user\titem\n1\t10\n2\t20\n"), "tsv")
    assert df["user"].dtype == np.int64 and df["item"].tolist() == [10, 20]
    df = read_interactions(
        write(tmp_path / "b.txt", "user;item;ts\n1;2;100\n"), "csv", sep=";", timestamp_col="ts"
    )
    assert df.iloc[0].tolist() == [1, 2, 100]


def test_csv_with_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfuser,item\r\n1,2\r\n3,4\r\n")
    assert read_interactions(path, "csv").to_dict("list") == {"user": [1, 3], "item": [2, 4]}


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pd.DataFrame({"u": [1.0, 2.0], "i": ["a", "b"], "r": [1, 5]}).to_parquet(path)
    df = read_interactions(path, "parquet", user_col="u", item_col="i", rating_col="r")
    assert df.to_dict("list") == {"user": [1, 2], "item": ["a", "b"], "rating": [1.0, 5.0]}
    assert df["user"].dtype == np.int64
    with pytest.raises(DataError, match=r"no user column found.*'u', 'i', 'r'"):
        read_interactions(path, "parquet")


def test_titles(tmp_path: Path) -> None:
    u_item = write(tmp_path / "u.item.xz", "1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n")
    assert read_titles(u_item) == {1: "Toy Story (1995)"}
    movies = write(tmp_path / "movies.dat", "2::Jumanji (1995)::Adventure\n")
    assert read_titles(movies) == {2: "Jumanji (1995)"}
    csv_text = 'movieId,title,genres\n3,"Grumpier Old Men, The (1995)",Comedy\n'
    assert read_titles(write(tmp_path / "movies.csv", csv_text)) == {
        3: "Grumpier Old Men, The (1995)"
    }
    artists = write(
        tmp_path / "artists.dat", "id\tname\turl\tpictureURL\n1\tMALICE MIZER\tu\tp\n", "utf-8"
    )
    assert read_titles(artists) == {1: "MALICE MIZER"}


# ---- bad input: exactly one DataError, with file and line ----------------------------------------
@pytest.mark.parametrize(
    ("name", "fmt", "text", "pattern"),
    [
        ("u.data", "movielens", U_DATA + "5\t6\t7\n", r"u\.data:4: expected 4 tab-separated"),
        ("u.data", "movielens", U_DATA + "x\t6\t7\t8\n", r"u\.data:4: user 'x' is not an integer"),
        ("u.data", "movielens", "1\t2\tgood\t3\n", r"u\.data:1: rating is not a number"),
        ("u.data", "movielens", "1\t\t3\t4\n", r"u\.data:1: item is not an integer"),
        ("ratings.dat", "movielens", "1::2::3\n4::5::6::7\n", r"ratings\.dat:2: expected 3 '::'"),
        ("r.csv", "movielens", "userId,movieId,rating,timestamp\n1,2,x,4\n", r"r\.csv:2: rating"),
        ("junk.dat", "movielens", "hello world\n", r"junk\.dat:1: not a MovieLens"),
        ("train.txt", "lightgcn", "0 1 2\n1 3 x4\n", r"train\.txt:2: id 'x4' is not an integer"),
        ("users.dat", "citeulike", "2 1 2\n3 1 2\n", r"users\.dat:2: the count field says 3"),
        ("users.dat", "citeulike", "1 1\n\n1 2\n", r"users\.dat:2: empty line"),
        ("ua.dat", "hetrec", "user\tartist\tweight\n1\t2\t3\n", r"ua\.dat:1: expected the header"),
        ("ua.dat", "hetrec", "userID\tartistID\tweight\r\n1\t2\r\n", r"ua\.dat:2: expected 3 tab"),
        ("x.rating", "diffnet", "1\t2\t1\n3\tfour\t1\n", r"x\.rating:2: item 'four'"),
        ("m.csv", "csv", "user,item,r\n1,2,3\n1,2,3,4\n", r"m\.csv:3: expected 3 fields"),
        ("m.csv", "csv", "user,item,r\n1,2,3\n,5,6\n", r"m\.csv:3: empty 'user'"),
    ],
)
def test_malformed_input_names_file_and_line(
    tmp_path: Path, name: str, fmt: str, text: str, pattern: str
) -> None:
    with pytest.raises(DataError, match=pattern):
        read_interactions(write(tmp_path / name, text), fmt)


def test_csv_bad_rating_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "user,item,score\n1,2,3\n1,3,high\n")
    with pytest.raises(DataError, match=r"m\.csv:3: score 'high' is not a number"):
        read_interactions(path, "csv", rating_col="score")


def test_csv_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "who,movieId\n1,2\n")
    with pytest.raises(DataError, match=r"no user column found .*user_col; .*'who', 'movieId'"):
        read_interactions(path, "csv")
    with pytest.raises(DataError, match=r"no column 'user' .*'who', 'movieId'"):
        read_interactions(path, "csv", user_col="user")
    with pytest.raises(DataError, match=r"no column 'rating'"):
        read_interactions(path, "csv", user_col="who", rating_col="rating")


@pytest.mark.parametrize("name", ["empty.csv", "blank.txt", "empty.dat.xz"])
def test_empty_files(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, "" if "blank" not in name else "\n \n")
    fmt = "csv" if name.endswith(".csv") else "lightgcn"
    with pytest.raises(DataError, match="is empty"):
        read_interactions(path, fmt)


def test_header_only_csv_has_no_interactions(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no interactions"):
        read_interactions(write(tmp_path / "h.csv", "user,item\n"), "csv")


def test_other_failures(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown format 'excel'"):
        read_interactions(tmp_path / "x", "excel")
    with pytest.raises(DataError, match="file not found"):
        read_interactions(tmp_path / "missing.csv", "csv")
    (tmp_path / "bad.xz").write_bytes(b"not xz at all")
    with pytest.raises(DataError, match="cannot decompress"):
        read_interactions(tmp_path / "bad.xz", "lightgcn")
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable parquet"):
        read_interactions(tmp_path / "bad.parquet", "parquet")
    with pytest.raises(ConfigError, match="user_col only apply"):
        read_interactions(write(tmp_path / "u.data", U_DATA), "movielens", user_col="u")


@pytest.mark.dataset
def test_ml1m_reads_fast(data_dir: Path) -> None:
    path = data_dir / "ml-1m" / "ratings_no_timestamp.dat.xz"
    start = time.perf_counter()
    df = read_interactions(path, "movielens")
    elapsed = time.perf_counter() - start
    assert len(df) == 1_000_209
    assert df["user"].nunique() == 6040 and df["item"].nunique() == 3706
    assert elapsed < 5.0  # about 0.4 s when the machine is not shared


def test_a_bad_timestamp_column_is_one_error_and_no_pandas_warning(tmp_path):
    """pandas warns when it cannot infer a date format (then parses value by value); the reader
    reports the first bad value itself, so the warning is only noise."""
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\n1,10,tomorrow\n2,11,2020\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"row 1: 'timestamp' is not a number or a date"):
            read_interactions(path, "csv")
