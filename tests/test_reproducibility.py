"""Same seed, same bits — with two threads, and across a SIGKILL and ``--resume``."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hlrm.data.pipeline import DataConfig, load_split
from hlrm.models import create_model
from hlrm.training.checkpoint import load_checkpoint
from hlrm.training.trainer import TrainConfig, Trainer

SCRIPT = shutil.which("hlrm", path=str(Path(sys.executable).parent)) or shutil.which("hlrm")


def fit_twice(**options):
    split = load_split(DataConfig(dataset="synthetic").resolved())
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        models = []
        for _ in range(2):
            torch.manual_seed(0)
            model = create_model("cml", split.n_users, split.n_items, dim=32)
            config = TrainConfig(epochs=2, device="cpu", patience=0, **options)
            Trainer(model, split, config, progress=False).fit()
            models.append(model)
    finally:
        torch.set_num_threads(threads)
    return models


def test_two_threads_same_seed_same_bits():
    first, second = fit_twice()
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training


@pytest.mark.skipif(SCRIPT is None or os.name == "nt", reason="needs the console script and POSIX")
def test_sigkill_then_resume_gives_the_uninterrupted_checkpoint(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    common = ["--model", "cml", "--dataset", "synthetic", "--epochs", "6", "--patience", "0",
              "--quiet", "--device", "cpu"]  # fmt: skip
    straight = tmp_path / "straight"
    subprocess.run([SCRIPT, "train", *common, "--run-dir", str(straight)], check=True, env=env)

    killed = tmp_path / "killed"
    process = subprocess.Popen([SCRIPT, "train", *common, "--run-dir", str(killed)], env=env)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.is_file() and time.monotonic() < deadline:  # past the first epoch
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.is_file()
    epoch = load_checkpoint(last, "cpu")["epoch"]
    resumed = subprocess.run(
        [SCRIPT, "train", "--run-dir", str(killed), "--resume", "--quiet"], env=env
    )
    assert resumed.returncode == 0
    a = load_checkpoint(straight / "checkpoints" / "last.pt", "cpu")
    b = load_checkpoint(last, "cpu")
    assert a["epoch"] == b["epoch"] == 6 and epoch < 6
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    for key in ("best_epoch", "best_value"):
        assert a[key] == b[key]


def test_resume_removes_temporaries_of_a_killed_write(tmp_path):
    from hlrm.config import RunConfig
    from hlrm.runs import train

    config = RunConfig.from_dict(
        {"data": {"dataset": "synthetic"}, "train": {"epochs": 1, "device": "cpu"}}
    )
    run_dir = tmp_path / "run"
    train(config, run_dir, progress=False)
    stale = run_dir / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    config.train.epochs = 2
    train(config, run_dir, resume=True, progress=False)
    assert not stale.exists()
    assert (run_dir / "checkpoints" / "last.pt").is_file()


@pytest.mark.skipif(os.name == "nt", reason="POSIX file locks")
def test_a_second_training_into_the_same_directory_is_refused(tmp_path):
    from hlrm.config import RunConfig
    from hlrm.errors import HlrmError
    from hlrm.runs import lock_run_directory, train

    config = RunConfig.from_dict(
        {"data": {"dataset": "synthetic"}, "train": {"epochs": 1, "device": "cpu"}}
    )
    run_dir = tmp_path / "run"
    holder = lock_run_directory(run_dir)  # as a running training holds it
    try:
        with pytest.raises(HlrmError, match="another hlrm process"):
            train(config, run_dir, progress=False)
        assert not (run_dir / "config.toml").exists()
    finally:
        holder.close()
    train(config, run_dir, progress=False)  # released: the directory is usable
    assert (run_dir / "metrics.json").is_file()
