"""The reliability issue's remaining bad-input cases, through the installed console script:
sizes that cannot fit in memory, data that never ends, damaged or incomplete runs, and a
configuration whose data path points at a file that is not data. Each one: exit != 0, one line
naming the problem, no traceback, nothing written or changed."""

import gzip
import json
import os
import shutil
import zlib
from pathlib import Path

import pytest
import torch

from hlrm.data.readers import read_interactions
from hlrm.errors import HlrmError
from test_console_script import SCRIPT, run_script

pytestmark = pytest.mark.skipif(SCRIPT is None, reason="the hlrm console script is not installed")


def assert_one_line(result, *fragments):
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished CML run on the synthetic data (two epochs)."""
    run = tmp_path_factory.mktemp("runs") / "cml"
    result = run_script(
        "train", "--model", "cml", "--dataset", "synthetic", "--epochs", "2", "--device", "cpu",
        "--run-dir", str(run), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run


def damaged_copy(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# ---- sizes against memory ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--negatives", "10000000"], "--negatives 10,000,000"),
        (["--emb-size", "100000000"], "--emb-size 100000000"),
        (["--negatives", "100000", "--no-shared-negatives"], "--negatives 100,000"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_before_anything(tmp_path, options, fragment):
    run_dir = tmp_path / "run"
    result = run_script(
        "--quiet", "train", "--dataset", "synthetic", "--epochs", "1", "--device", "cpu",
        "--run-dir", str(run_dir), *options,
    )  # fmt: skip
    line = assert_one_line(result, fragment, "of memory, more than the")
    assert "GiB" in line or "TiB" in line
    assert not run_dir.exists()


def test_a_cut_off_beyond_the_catalogue_counts_the_whole_catalogue(trained):
    """``--k 1000000`` on 1,000 items tried to allocate gigabytes; a list cannot be longer than
    the catalogue, so the metrics are computed on all of it, exactly and at once."""
    before = snapshot(trained)
    result = run_script("evaluate", str(trained), "--k", "1000,1000000", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["recall@1000000"] == metrics["recall@1000"] == 1.0
    assert metrics["ndcg@1000000"] == pytest.approx(metrics["ndcg@1000"])
    assert metrics["precision@1000000"] == pytest.approx(metrics["precision@1000"] / 1000)
    assert snapshot(trained) == before


# ---- data that never ends ------------------------------------------------------------------------
def test_a_fifo_or_a_device_as_data_is_refused(tmp_path):
    fifo = tmp_path / "ratings.csv"
    os.mkfifo(fifo)
    result = run_script("train", "--data", str(fifo), "--run-dir", str(tmp_path / "run"))
    assert_one_line(result, "is a FIFO")  # it returned: nothing read from the pipe
    result = run_script("train", "--data", "/dev/zero", "--format", "csv")
    assert_one_line(result, "not a regular file")
    assert not (tmp_path / "run").exists()


def test_a_gzip_bomb_is_one_line(tmp_path):
    bomb = tmp_path / "ratings.csv"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    zeros = bytes(1 << 20)
    with bomb.open("wb") as handle:
        for _ in range(256):  # 256 MiB of zeros in about 256 KiB
            handle.write(compressor.compress(zeros))
        handle.write(compressor.flush())
    assert bomb.stat().st_size < 1 << 20
    result = run_script("train", "--data", str(bomb), "--run-dir", str(tmp_path / "run"))
    assert_one_line(result, str(bomb))
    assert not (tmp_path / "run").exists()


# ---- damaged and incomplete runs -----------------------------------------------------------------
def foreign_checkpoint(run: Path, tmp_path: Path) -> None:
    """The best checkpoint of a run on other data (60 users, 40 items)."""
    data = tmp_path / "other.csv"
    data.write_text("user,item\n" + "".join(f"{u},{(u * 7 + j) % 40}\n" for u in range(60)
                                            for j in range(6)))  # fmt: skip
    other = tmp_path / "other"
    result = run_script("train", "--model", "cml", "--data", str(data), "--epochs", "1",
                        "--device", "cpu", "--run-dir", str(other), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    shutil.copy(other / "checkpoints/best.pt", run / "checkpoints/best.pt")


def garbage_checkpoint(run: Path, tmp_path: Path) -> None:
    (run / "checkpoints/best.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)


def keyless_checkpoint(run: Path, tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, run / "checkpoints/best.pt")


def reshaped_checkpoint(run: Path, tmp_path: Path) -> None:
    path = run / "checkpoints/best.pt"
    state = torch.load(path, weights_only=True)
    state["state_dict"]["item_embeddings"] = torch.zeros(3, 3)
    torch.save(state, path)


def truncated_split(run: Path, tmp_path: Path) -> None:
    data = (run / "split.npz").read_bytes()
    (run / "split.npz").write_bytes(data[: len(data) // 2])


def corrupt_metrics(run: Path, tmp_path: Path) -> None:
    (run / "metrics.json").write_text('{"ndcg@10": 0.3, ')


def killed_mid_training(run: Path, tmp_path: Path) -> None:
    (run / "metrics.json").unlink()
    (run / "per_user_metrics.parquet").unlink()


def missing_best(run: Path, tmp_path: Path) -> None:
    killed_mid_training(run, tmp_path)
    (run / "checkpoints/best.pt").unlink()


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (foreign_checkpoint, ["belongs to another run", "60 users and 40 items"]),
        (garbage_checkpoint, ["cannot read checkpoint", "best.pt"]),
        (keyless_checkpoint, ["is not an hlrm checkpoint", "model"]),
        (reshaped_checkpoint, ["is damaged: its weights do not fit the 'cml' model"]),
        (truncated_split, ["split.npz is damaged or not an hlrm split"]),
        (corrupt_metrics, ["metrics.json is damaged"]),
        (killed_mid_training, ["is incomplete: its training did not finish", "--resume"]),
        (missing_best, ["is incomplete: training stopped before its first checkpoint"]),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "recommend"])
def test_damaged_runs_are_one_line(trained, tmp_path, damage, fragments, command):
    run = damaged_copy(trained, tmp_path)
    damage(run, tmp_path)
    before = snapshot(run)
    args = [command, str(run)] + (["--user", "0"] if command == "recommend" else [])
    result = run_script(*args)
    if command == "recommend" and damage is killed_mid_training:
        assert result.returncode == 0, result.stderr  # the best weights so far serve
    else:
        assert_one_line(result, *fragments)
    assert snapshot(run) == before


def test_an_incomplete_run_is_evaluated_only_when_asked(trained, tmp_path):
    run = damaged_copy(trained, tmp_path)
    killed_mid_training(run, tmp_path)
    result = run_script("evaluate", str(run), "--allow-incomplete", "--json")
    assert result.returncode == 0, result.stderr
    assert "ndcg@10" in json.loads(result.stdout)
    assert "is incomplete: evaluating its best checkpoint so far" in result.stderr


def test_resume_from_a_foreign_last_checkpoint_is_one_line(trained, tmp_path):
    run = damaged_copy(trained, tmp_path)
    shutil.copy(run / "checkpoints/best.pt", run / "checkpoints/last.pt")  # no optimizer state
    before = snapshot(run)
    result = run_script("--quiet", "train", "--run-dir", str(run), "--resume", "--epochs", "3")
    assert_one_line(result, "last.pt is not an hlrm checkpoint", "optimizer")
    assert snapshot(run) == before


# ---- a data path that points at something else --------------------------------------------------
SECRET = "TOPSECRET-3f9a:hunter2:/root"


@pytest.mark.parametrize(
    "fmt", ["csv", "tsv", "movielens", "lightgcn", "citeulike", "hetrec", "diffnet"]
)
def test_errors_never_show_the_first_line_of_a_file_that_is_not_data(tmp_path, fmt):
    secret = tmp_path / "id_key"
    secret.write_text(f"{SECRET}\nmore secret lines\n")
    with pytest.raises(HlrmError) as caught:
        read_interactions(secret, fmt)
    assert "TOPSECRET" not in str(caught.value) and "hunter2" not in str(caught.value)
    compressed = tmp_path / "id_key.gz"
    compressed.write_bytes(gzip.compress(secret.read_bytes()))
    with pytest.raises(HlrmError) as caught:
        read_interactions(compressed, fmt)
    assert "TOPSECRET" not in str(caught.value)


def test_a_config_pointing_at_a_secret_file_does_not_disclose_it(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text(f"{SECRET}\n")
    config = tmp_path / "config.toml"
    config.write_text(f'[data]\npath = "{secret}"\nformat = "csv"\n')
    result = run_script("train", "--config", str(config), "--run-dir", str(tmp_path / "run"))
    line = assert_one_line(result, str(secret))
    assert "TOPSECRET" not in line and "hunter2" not in line
    assert not (tmp_path / "run").exists()


# ---- a model option of the wrong type ----------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "option", "expected"),
    [("ease", "l2=x", "expected float"), ("cml", "dim=2.5", "expected int")],
)
def test_a_model_option_of_the_wrong_type_is_named(tmp_path, model, option, expected):
    data = tmp_path / "log.csv"
    data.write_text("user,item\n" + "".join(f"{u},{i}\n" for u in range(6) for i in range(5)))
    result = run_script(
        "train", "--model", model, "--data", str(data), "--param", option,
        "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert_one_line(result, option.split("=")[0], expected)
    assert not (tmp_path / "run").exists()
