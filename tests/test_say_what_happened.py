"""What the pipeline and a run report about themselves: one line per preprocessing step (also
as data), columns found by their common names, logging levels, run files that follow the umask,
and stored data paths and checksums that make a run usable from elsewhere and detect changed
data."""

import json
import os
import stat

import pandas as pd
import pytest

from cli_helpers import assert_clean_error
from hlrm.data.pipeline import DataConfig, load_split
from hlrm.data.readers import read_interactions
from hlrm.errors import DataError
from hlrm.fileio import write_text
from test_console_script import SCRIPT, run_script

ROWS = [
    # user, item, rating, time: user 9 and item 99 have one interaction each, one pair repeats
    *[(u, i, 5, 100 + 10 * u + i) for u in range(1, 7) for i in range(1, 7)],
    (1, 1, 2, 1),
    (9, 1, 4, 2),
    (1, 99, 5, 3),
    (2, 3, 1, 4),
]


def write_csv(path, names=("userId", "movieId", "rating", "timestamp"), sep=","):
    lines = [sep.join(names)] + [sep.join(map(str, row)) for row in ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_preprocessing_step_is_reported_as_data_and_as_a_line(tmp_path):
    path = write_csv(tmp_path / "ratings.csv")
    split = load_split(DataConfig(path=str(path), min_rating=3, user_core=2, item_core=2))
    steps = {step.step: step for step in split.preprocessing}
    assert list(steps) == ["read", "rating threshold", "duplicates", "core filter", "split"]
    assert (steps["read"].rows_after, steps["rating threshold"].rows_after) == (40, 38)
    assert steps["duplicates"].rows_removed == 0  # (1, 1, 2) fell under the threshold first
    core = steps["core filter"]
    assert (core.rows_removed, core.users_removed, core.items_removed) == (2, 1, 1)
    assert "userId" in str(steps["read"]) and "40 rows" in str(steps["read"])
    assert "rating >= 3" in str(steps["rating threshold"])
    assert "dropped 2 of 40 rows (5.0%)" in str(steps["rating threshold"])
    assert "1 user and 1 item" in str(core)

    unfiltered = load_split(DataConfig(path=str(path)))
    duplicates = next(s for s in unfiltered.preprocessing if s.step == "duplicates")
    assert duplicates.rows_removed == 2 and "collapsed 2 repeated" in str(duplicates)


@pytest.mark.parametrize(
    "names",
    [
        ("userId", "movieId", "rating", "timestamp"),
        ("user_id", "item_id", "Rating", "time"),
        ("User ID", "ISBN", "score", "ts"),
        ("user", "item", "weight", "date_ignored"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_columns_are_found_by_their_common_names(tmp_path, names, fmt):
    if fmt == "parquet":
        path = tmp_path / "x.parquet"
        pd.DataFrame(ROWS, columns=list(names)).to_parquet(path)
    else:
        path = write_csv(tmp_path / f"x.{fmt}", names, "," if fmt == "csv" else "\t")
    frame = read_interactions(path, fmt)
    found = frame.attrs["columns"]
    assert (found["user"], found["item"], found["rating"]) == names[:3]
    assert found.get("timestamp") == (None if names[3] == "date_ignored" else names[3])
    assert len(frame) == len(ROWS) and frame["rating"].max() == 5


def test_a_given_column_wins_and_missing_roles_are_named(tmp_path):
    path = write_csv(tmp_path / "x.csv", ("a", "b", "rating", "stamp"))
    with pytest.raises(DataError, match="no user column found"):
        read_interactions(path, "csv")
    frame = read_interactions(path, "csv", user_col="a", item_col="b", timestamp_col="stamp")
    assert frame.attrs["columns"] == {"user": "a", "item": "b", "rating": "rating",
                                      "timestamp": "stamp"}  # fmt: skip


def test_run_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_text(tmp_path / "shared.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o640
    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "public.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "public.txt").stat().st_mode) == 0o644


pytestmark_script = pytest.mark.skipif(SCRIPT is None, reason="no hlrm console script")


@pytestmark_script
def test_train_prints_the_steps_and_quiet_silences_them(tmp_path):
    write_csv(tmp_path / "ratings.csv")
    args = ["train", "--model", "popularity", "--data", "ratings.csv", "--min-rating", "3"]
    result = run_script(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for fragment in ("read 40 rows", "rating threshold (rating >= 3): dropped 2 of 40",
                     "duplicates: none", "core filter: none", "split 'random'"):  # fmt: skip
        assert fragment in result.stderr, result.stderr
    assert "test metrics" in result.stdout and "read 40 rows" not in result.stdout

    quiet = run_script("--quiet", *args, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr
    verbose = run_script("-v", *args, cwd=tmp_path)
    assert "[data]" in verbose.stderr  # the configuration, at debug level


@pytestmark_script
def test_a_run_works_from_another_directory_and_refuses_changed_data(tmp_path):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    data = here / "ratings.csv"
    pairs = sorted({(u, (u * 7 + j * 3) % 40) for u in range(60) for j in range(8)})
    data.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in pairs))
    args = ["--model", "cml", "--epochs", "1", "--device", "cpu", "--quiet"]
    first = run_script("train", "--data", "ratings.csv", *args, "--run-dir", "run", cwd=here)
    assert first.returncode == 0, first.stderr
    run = here / "run"
    stored = run.joinpath("config.toml").read_text()
    assert f'path = "{data}"' in stored
    meta = json.loads((run / "meta.json").read_text())
    assert list(meta["data_sha256"]) == [str(data)] and len(meta["data_sha256"][str(data)]) == 64
    assert stat.S_IMODE((run / "config.toml").stat().st_mode) & 0o044  # not private (0600)

    again = run_script("train", "--config", str(run / "config.toml"), "--run-dir", "copy",
                       "--quiet", cwd=elsewhere)  # fmt: skip
    assert again.returncode == 0, again.stderr

    with data.open("a") as handle:
        handle.write("7,39\n")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    resumed = run_script("train", "--run-dir", str(run), "--resume", "--epochs", "2",
                         cwd=elsewhere)  # fmt: skip
    assert_clean_error(resumed.returncode, resumed.stderr, "the data changed", "ratings.csv")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
