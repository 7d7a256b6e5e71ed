"""The command line end to end: real data, run directories, and one clear line for bad input."""

import json

import pandas as pd
import pytest

from cli_helpers import assert_clean_error, run_cli


@pytest.fixture
def data_env(monkeypatch, data_dir):
    monkeypatch.setenv("HLRM_DATA_DIR", str(data_dir))
    return data_dir


def test_train_evaluate_recommend_resume_on_ml100k(monkeypatch, capsys, tmp_path, data_env):
    run_dir = tmp_path / "cml-100k"
    code, out, err = run_cli(
        monkeypatch, capsys,
        "train", "--model", "cml", "--dataset", "ml-100k", "--epochs", "2",
        "--lr", "0.002", "--run-dir", str(run_dir), "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    expected = ["config.toml", "meta.json", "split.npz", "history.csv", "metrics.json"]
    expected += ["per_user_metrics.parquet", "checkpoints/best.pt", "checkpoints/last.pt"]
    for name in expected:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("ndcg@10", "recall@10", "precision@10", "hit@10", "map@10", "mrr@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["protocol"]["target"] == "test"
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["hlrm_version"]
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    per_user = pd.read_parquet(run_dir / "per_user_metrics.parquet")
    assert per_user["ndcg@10"].mean() == pytest.approx(metrics["ndcg@10"])

    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(run_dir), "--json", "--k", "5,10")
    assert code == 0, err
    again = json.loads(out)
    assert again["ndcg@10"] == pytest.approx(metrics["ndcg@10"])
    assert "ndcg@5" in again

    code, out, err = run_cli(
        monkeypatch, capsys, "recommend", str(run_dir), "--user", "42", "--k", "5", "--json"
    )
    assert code == 0, err
    recommendations = json.loads(out)
    assert [r["rank"] for r in recommendations] == [1, 2, 3, 4, 5]
    assert all(r["title"] for r in recommendations)

    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--run-dir", str(run_dir), "--resume", "--epochs", "3",
        "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert len(pd.read_csv(run_dir / "history.csv")) == 3


def test_datasets_list_and_show(monkeypatch, capsys, data_env):
    code, out, _ = run_cli(monkeypatch, capsys, "datasets")
    assert code == 0
    assert "ml-100k" in out and "gowalla" in out
    code, out, err = run_cli(monkeypatch, capsys, "datasets", "show", "ml-100k", "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["users"] > 0 and stats["items"] > 0


def test_user_file_in_csv(monkeypatch, capsys, tmp_path):
    rows = [(u, (u * 7 + j) % 40, 5) for u in range(60) for j in range(12)]
    path = tmp_path / "log.csv"
    pd.DataFrame(rows, columns=["who", "what", "stars"]).to_csv(path, index=False)
    code, out, err = run_cli(
        monkeypatch, capsys,
        "train", "--model", "cml", "--data", str(path), "--format", "csv", "--user-col", "who",
        "--item-col", "what", "--rating-col", "stars", "--min-rating", "4", "--epochs", "1",
        "--quiet", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file()


BAD_INPUTS = {
    "malformed line": ("1\t2\t5\t100\n3\t4\n", "movielens", "u.data:2"),
    "non-numeric id": ("1\t2\t5\t100\nx\t4\t5\t100\n", "movielens", "u.data:2"),
    "empty file": ("", "movielens", "empty"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_files_give_one_clear_line(monkeypatch, capsys, tmp_path, case):
    text, fmt, fragment = BAD_INPUTS[case]
    path = tmp_path / "u.data"
    path.write_text(text)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        monkeypatch, capsys,
        "train", "--data", str(path), "--format", fmt, "--run-dir", str(run_dir), "--quiet",
    )  # fmt: skip
    assert_clean_error(code, err, fragment)
    assert not run_dir.exists()


def test_missing_column(monkeypatch, capsys, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item\n1,2\n")
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--data", str(path), "--format", "csv",
        "--user-col", "user", "--item-col", "movie", "--quiet",
    )  # fmt: skip
    assert_clean_error(code, err, "movie")


def test_filter_that_leaves_nothing(monkeypatch, capsys, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item\n1,2\n1,3\n2,2\n")
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--data", str(path), "--format", "csv",
        "--user-col", "user", "--item-col", "item", "--core", "5", "--quiet",
    )  # fmt: skip
    assert_clean_error(code, err)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--dataset", "no-such-set"], "no-such-set"),
        (["train", "--dataset", "synthetic", "--model", "nope"], "'nope' is not one of cml"),
        (["train", "--dataset", "synthetic", "--param", "wings=2"], "wings"),
        (["evaluate", "/nonexistent/run"], "not an hlrm run directory"),
        (["train", "--config", "/nonexistent/c.toml"], "config file not found"),
        (["evaluate", "/nonexistent/run", "--k", "ten"], "--k"),
        (["train", "--dataset", "synthetic", "--score-memory", "0"], "memory budget"),
    ],
)
def test_bad_names_give_one_clear_line(monkeypatch, capsys, args, fragment):
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert_clean_error(code, err, fragment)


def test_quickstart_beats_popularity(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "quickstart", "--epochs", "5", "--device", "cpu")
    assert code == 0, err
    assert "popularity" in out and "cml" in out
    # It keeps its run, says where, and what to try next; a second one does not touch it.
    assert (tmp_path / "runs/quickstart/checkpoints/best.pt").is_file()
    assert "saved in runs/quickstart" in out and "hlrm recommend runs/quickstart --user" in out
    code, out, err = run_cli(monkeypatch, capsys, "quickstart", "--epochs", "1", "--device", "cpu")
    assert code == 0, err
    assert "saved in runs/quickstart-2" in out


def test_original_project_options(monkeypatch, capsys, tmp_path):
    """The options users of the original HLRM code look for, end to end on synthetic data."""
    import torch

    from hlrm.config import RunConfig
    from hlrm.training.checkpoint import load_checkpoint

    base = tmp_path / "cml"
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--model", "cml",
        "--emb-size", "8", "--epochs", "1", "--quiet", "--run-dir", str(base),
    )  # fmt: skip
    assert code == 0, err
    hlr = tmp_path / "hlr"
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--hlrm-type", "base",
        "--num-inter", "5", "--num-relations", "4", "--history-sampling", "unpop",
        "--emb-size", "8", "--epochs", "3", "--lr", "0.01", "--lr-gamma", "0.5",
        "--clip", "1.0", "--patience", "2", "--eval-size", "50", "--init-from", str(base),
        "--freeze-embeddings", "--quiet", "--run-dir", str(hlr),
    )  # fmt: skip
    assert code == 0, err
    config = RunConfig.from_toml(hlr / "config.toml")
    assert config.model.name == "hlr"
    assert config.model.params["history_size"] == 5
    assert config.model.params["n_slots"] == 4
    assert config.model.params["history_sampling"] == "unpop"
    assert (config.train.lr_gamma, config.train.clip_grad, config.train.patience) == (0.5, 1.0, 2)
    assert config.eval.max_users == 50
    lrs = pd.read_csv(hlr / "history.csv")["lr"].tolist()
    assert lrs == pytest.approx([0.01 * 0.5**e for e in range(len(lrs))])
    warm = load_checkpoint(base / "checkpoints" / "best.pt")["state_dict"]
    trained = load_checkpoint(hlr / "checkpoints" / "best.pt")["state_dict"]
    for table in ("user_embeddings", "item_embeddings"):  # warm-started and frozen
        assert torch.equal(warm[table], trained[table])
    assert json.loads((hlr / "metrics.json").read_text())["protocol"]["users"] == 50

    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "evaluate",
        str(hlr),
        "--topk",
        "5",
        "--eval-size",
        "30",
        "--json",
        "--score-memory",
        "0.5",
    )
    assert code == 0, err
    result = json.loads(out)
    assert "ndcg@5" in result and result["protocol"]["users"] == 30

    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--hlrm-type", "plus",
        "--model", "hlr", "--quiet",
    )  # fmt: skip
    assert_clean_error(code, err, "contradicts")


@pytest.mark.parametrize("model", ["lrml", "hlr", "hlr++", "transcf", "adacml"])
def test_relation_models_end_to_end_on_ml100k(monkeypatch, capsys, tmp_path, data_env, model):
    run_dir = tmp_path / model
    history = ["--num-inter", "10"] if model in ("hlr", "hlr++", "adacml") else []
    if model in ("hlr", "hlr++"):
        history += ["--pretrain", "none"]  # the two-stage default: tests/test_pretrain.py
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--model", model, "--dataset", "ml-100k", "--epochs", "1",
        *history, "--lr", "0.002", "--run-dir", str(run_dir), "--quiet",
        "--device", "cpu", "--k", "10",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 < metrics["ndcg@10"] <= 1.0
    code, out, err = run_cli(
        monkeypatch, capsys, "recommend", str(run_dir), "--user", "1", "--k", "3", "--explain",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    recommendations = json.loads(out)
    assert len(recommendations) == 3
    if model in ("lrml", "hlr", "hlr++"):
        assert all(r["explanation"] for r in recommendations)


def test_ids_are_shown_literally_never_as_markup(monkeypatch, capsys, tmp_path):
    rows = ["user,item"]
    items = ["plain", "[/x]5", "[bold]b", "c\x1bd"]
    for user in range(30):
        for item in items[: 1 + user % 4]:
            rows.append(f"u{user},{item}")
    path = tmp_path / "log.csv"
    path.write_text("\n".join(rows) + "\n")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--model", "popularity", "--data", str(path),
        "--format", "csv", "--run-dir", str(run_dir), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "recommend", str(run_dir), "--user", "u0")
    assert code == 0, err
    assert "[/x]5" in out and "[bold]b" in out and "\x1b" not in out and "c\\x1bd" in out
