"""Start-up: ``hlrm --help`` loads no heavy library, and the thread defaults respect the user."""

import json
import os
import subprocess
import sys

import pytest

from hlrm import threads

HEAVY = ("torch", "pandas", "scipy", "numpy", "pyarrow", "matplotlib", "optuna")

PROBE = """
import json, sys
sys.argv = ["hlrm", *sys.argv[1:]]
import hlrm.cli
try:
    hlrm.cli.main()
except SystemExit:
    pass
heavy = {heavy!r}
print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["train", "--help"], ["evaluate", "--help"], ["--version"], ["train", "--bogus"]],
)
def test_help_and_usage_errors_import_no_heavy_library(args):
    """``hlrm --help`` answered in ~4 s because the CLI module imported torch and pandas."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded = json.loads(result.stderr.strip().splitlines()[-1])
    assert loaded == [], f"hlrm {' '.join(args)} imported {loaded}"


def probe_environment(env: dict[str, str]) -> dict[str, str | None]:
    code = (
        "import json, os, hlrm; "
        "print(json.dumps({k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    return json.loads(result.stdout)


def test_openmp_waits_passively_unless_the_user_says_otherwise():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    assert probe_environment(env)["OMP_WAIT_POLICY"] == "PASSIVE"
    chosen = probe_environment({**env, "OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"})
    assert chosen == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"}


def test_threads_are_lowered_only_to_the_usable_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    threads.set_thread_defaults()
    assert os.environ["OMP_NUM_THREADS"] == "2"

    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    threads.set_thread_defaults()  # nothing restricts the process: PyTorch's own choice stands
    assert "OMP_NUM_THREADS" not in os.environ

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    threads.set_thread_defaults()
    assert os.environ["OMP_NUM_THREADS"] == "7"


def test_cgroup_quota_is_read(tmp_path, monkeypatch):
    real_path = threads.Path

    def fake_path(text):
        return real_path(str(text).replace("/sys/fs/cgroup", str(tmp_path)))

    monkeypatch.setattr(threads, "Path", fake_path)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_cpu_quota() == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_cpu_quota() is None
