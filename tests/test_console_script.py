"""The installed ``hlrm`` console script in a subprocess, as a user runs it.

The in-process runner cannot catch what only shows in a real install: a missing dependency on
the error path (typer 0.29 vendors click and installs none), exit codes typer returns rather
than raises, and signal handling.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import interruptible

SCRIPT = shutil.which("hlrm", path=str(Path(sys.executable).parent)) or shutil.which("hlrm")
pytestmark = pytest.mark.skipif(SCRIPT is None, reason="the hlrm console script is not installed")


def run_script(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--bogus"], "No such option"),
        (["bogus-command"], "No such command"),
        (["train", "--epochs", "ten"], "--epochs"),
        (["evaluate"], "Missing argument"),
    ],
)
def test_usage_errors_are_reported_without_a_traceback(args, fragment):
    result = run_script(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr


def test_an_input_error_is_one_line(tmp_path):
    result = run_script("train", "--model", "no-such-model", "--dataset", "synthetic")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_exits_zero():
    result = run_script("--help")
    assert result.returncode == 0
    assert "train" in result.stdout


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_ctrl_c_exits_130(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    process = subprocess.Popen(
        [SCRIPT, "quickstart", "--epochs", "1000", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        preexec_fn=interruptible,
    )
    time.sleep(8)  # past the imports, inside training
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--lr", "nan"], "learning rate"),
        (["--lr", "inf"], "learning rate"),
        (["--margin", "nan"], "margin"),
        (["--device", "tpu"], "device"),
        (["--select-by", "bogus@10"], "select_by"),
        (["--eval-size", "-3"], "max_users"),
        (["--cohorts", "-2"], "cohorts"),
        (["--temperature", "0"], "temperature"),
        (["--loss", "squared"], "loss"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, fragment):
    run_dir = tmp_path / "run"
    result = run_script(
        "train", "--dataset", "synthetic", "--epochs", "1", "--run-dir", str(run_dir), *options
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not run_dir.exists()


def test_run_directory_guards(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    result = run_script(
        "train", "--dataset", "synthetic", "--epochs", "1", "--run-dir", str(a_file)
    )
    assert (
        result.returncode != 0 and "is a file" in result.stderr and "Traceback" not in result.stderr
    )
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("mine")
    result = run_script(
        "train", "--dataset", "synthetic", "--epochs", "1", "--run-dir", str(crowded)
    )
    assert result.returncode != 0 and "not empty" in result.stderr
    assert (crowded / "notes.txt").read_text() == "mine" and len(list(crowded.iterdir())) == 1

    run_dir = tmp_path / "run"
    trained = run_script(
        "train", "--model", "cml", "--dataset", "synthetic", "--epochs", "2", "--run-dir",
        str(run_dir), "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    config = (run_dir / "config.toml").read_text()
    meta = (run_dir / "meta.json").read_text()
    changed = run_script("train", "--run-dir", str(run_dir), "--resume", "--model", "bpr")
    assert changed.returncode != 0 and "cannot resume" in changed.stderr
    assert (run_dir / "config.toml").read_text() == config
    assert (run_dir / "meta.json").read_text() == meta


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ('[train]\nepochs = "ten"\n', "epochs"),
        ('seed = "abc"\n', "seed"),
        ("[eval]\nks = 5\n", "ks"),
        ("train = 5\n", "[train]"),
    ],
)
def test_wrong_typed_config_values_are_one_line(tmp_path, toml, fragment):
    config = tmp_path / "bad.toml"
    config.write_text('[data]\ndataset = "synthetic"\n' + toml if "train = 5" not in toml else toml)
    result = run_script("train", "--config", str(config), "--run-dir", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_bad_config_files_and_sizes_are_one_line(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    for args in (
        ["train", "--config", str(binary)],
        ["train", "--config", str(tmp_path)],
        ["train", "--dataset", "synthetic", "--emb-size", "0"],
        ["train", "--dataset", "synthetic", "--seed", "-1"],
    ):
        result = run_script(*args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_version_is_one_line():
    result = run_script("--version")
    assert result.returncode == 0
    assert (
        result.stdout.strip().startswith("hlrm ") and len(result.stdout.strip().splitlines()) == 1
    )
