"""Deployment through the installed console script: ``train --final`` and batch output of
``recommend --users``, as a user runs them."""

import json

import pandas as pd
import pytest

from hlrm.data.synthetic import make_synthetic
from test_console_script import SCRIPT, run_script

pytestmark = pytest.mark.skipif(SCRIPT is None, reason="the hlrm console script is not installed")


@pytest.fixture(scope="module")
def final_run(tmp_path_factory):
    """A CML fitted with --final on a small file of integer ids (a few seconds)."""
    root = tmp_path_factory.mktemp("deploy")
    frame = make_synthetic(n_users=150, n_items=60, interactions_per_user=8, seed=5)
    frame[["user", "item"]].to_csv(root / "log.csv", index=False)
    run_dir = root / "run"
    result = run_script(
        "train", "--model", "cml", "--data", str(root / "log.csv"), "--final", "--epochs", "3",
        "--negatives", "20", "--emb-size", "8", "--device", "cpu", "--quiet",
        "--run-dir", str(run_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root, run_dir, frame, result.stdout


def owned(frame: pd.DataFrame) -> dict[int, set[int]]:
    return frame.groupby("user")["item"].agg(set).to_dict()


def test_final_fit_refits_on_everything_with_the_validated_epochs(final_run):
    _, run_dir, frame, stdout = final_run
    meta = json.loads((run_dir / "meta.json").read_text())
    chosen = meta["final"]["epochs"]
    history = pd.read_csv(run_dir / "validation" / "history.csv")
    assert chosen == int(history.loc[history["best"], "epoch"].iloc[-1])
    assert len(pd.read_csv(run_dir / "history.csv")) == chosen  # the refit trained that many
    assert (run_dir / "validation" / "metrics.json").is_file()
    # no test split left to measure on; metrics.json still marks the run finished
    assert "ndcg@10" not in json.loads((run_dir / "metrics.json").read_text())
    assert "of the validation run" in stdout and "final model" in stdout
    assert f"{len(frame.drop_duplicates(['user', 'item']))} interactions" in stdout
    result = run_script("evaluate", str(run_dir))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "final fit" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_recommend_every_user_into_a_file(final_run, suffix):
    root, run_dir, frame, _ = final_run
    out = root / f"recs{suffix}"
    result = run_script("recommend", str(run_dir), "--users", "all", "--k", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(table.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(table) == 3 * frame["user"].nunique()
    had = owned(frame)
    for user, rows in table.groupby("user_id"):
        assert list(rows["rank"]) == [1, 2, 3]
        assert not set(rows["item_id"]) & had[user]  # nothing the user has, in any part


def test_recommend_listed_users_and_refusals(final_run):
    root, run_dir, frame, _ = final_run
    listed = root / "users.txt"
    users = frame["user"].unique()[:2]
    listed.write_text(f"# two users\n{users[0]}\n\n{users[1]}\n")
    out = root / "two.csv"
    result = run_script("recommend", str(run_dir), "--users", str(listed), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(out)["user_id"].unique()) == list(users)
    listed.write_text(f"{users[0]}\nghost\n")
    refused = root / "refused.parquet"
    for args, fragment in [
        (["--users", str(listed), "--out", str(refused)], "unknown user id 'ghost'"),
        (["--users", "all"], "--users and --out go together"),
        (["--users", "all", "--out", str(root / "recs.txt")], ".parquet or .csv"),
        (["--users", str(root / "missing.txt"), "--out", str(refused)], "no file"),
    ]:
        result = run_script("recommend", str(run_dir), *args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not refused.exists() and not (root / "recs.txt").exists()
