"""Wall time of the installed console script as a new user meets it: ``hlrm --help`` and
``hlrm quickstart``, with no ``OMP_*`` / ``MKL_*`` variable set.

Each command runs ``--repeats`` times in a fresh process; the script prints the median, minimum
and maximum. ``--baseline-src DIR`` also times a second source tree (for instance a checkout of
an older commit's ``src``) through the same console script, interleaved with the current one,
so that the ratio is measured under the same load::

    git worktree add /tmp/hlrm-before 556de14
    python benchmarks/startup.py --baseline-src /tmp/hlrm-before/src
    python benchmarks/startup.py --quickstart --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"


def clean_environment(source: Path) -> dict[str, str]:
    """The caller's environment without thread settings, importing hlrm from ``source``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OMP_", "MKL_", "OPENBLAS_", "KMP_"))
    }
    env["PYTHONPATH"] = str(source)
    return env


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_once(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child). On a shared machine the wall
    time grows with the load; the CPU time much less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-src", type=Path, help="also time this source tree")
    parser.add_argument("--quickstart", action="store_true", help="time hlrm quickstart")
    args = parser.parse_args()

    script = shutil.which("hlrm", path=str(Path(sys.executable).parent)) or shutil.which("hlrm")
    if script is None:
        sys.exit("the hlrm console script is not installed (pip install -e .)")
    command = [script, "quickstart"] if args.quickstart else [script, "--help"]
    trees = {"current": SOURCE}
    if args.baseline_src is not None:
        trees["baseline"] = args.baseline_src.resolve()
    times: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            for name, source in trees.items():  # interleaved: both see the same load
                wall, used = time_once(command, clean_environment(source), Path(work))
                times[name].append(wall)
                cpu[name].append(used)
    machine = {
        "date": dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
    }
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        row = {
            "command": " ".join(["hlrm", *command[1:]]),
            "tree": name,
            "source": str(trees[name]),
            "median_s": round(medians[name], 3),
            "min_s": round(min(values), 3),
            "max_s": round(max(values), 3),
            "runs": [round(v, 3) for v in values],
            "cpu_median_s": round(statistics.median(cpu[name]), 3),
            **machine,
        }
        if name == "baseline":
            row["baseline_over_current"] = round(medians["baseline"] / medians["current"], 2)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
