"""Scale: the data pipeline on synthetic logs of 1M to 100M interactions, and a CML epoch on 1
and 2 processes (torchrun, gloo, CPU).

``pipeline``: for each size, a fresh child process generates the log once into a Parquet file
(:func:`hlrm.data.synthetic.write_synthetic_log`, kept in ``--cache``), and another fresh child
runs ``hlrm.data.pipeline.load_split`` on it (read → de-duplicate → re-index → random split →
CSR matrices), then ``describe`` (what ``hlrm datasets show`` prints). Each child reports its wall
time per step (the pipeline's own functions, timed where ``load_split`` calls them) and its peak
resident memory (``VmHWM``, the whole process: Python, NumPy, pandas and PyArrow included).

``epoch``: ``torchrun --nproc-per-node P -m hlrm train`` for one epoch of CML (the default
recipe, selection by validation loss so that no ranking is timed) on a dataset, P = 1 and 2;
the epoch's seconds as ``history.csv`` records them (training and the validation loss).

Prints one JSON line per measurement and a table; ``uptime`` is printed before and after, since
the machine is shared.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def child(argv: list[str]) -> dict[str, Any]:
    """Run one measurement in this (fresh) process: ``generate N PATH`` or ``pipeline PATH``."""
    if argv[0] == "generate":
        from hlrm.data.synthetic import write_synthetic_log

        started = time.perf_counter()
        write_synthetic_log(argv[2], int(argv[1]))
        return {"seconds": time.perf_counter() - started, "peak_mib": peak_rss_mib()}
    from hlrm.data import pipeline

    steps: dict[str, float] = {}

    def timed(name: str, function: Any) -> Any:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                steps[name] = steps.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    for name in ("read_interactions", "_preprocess", "reindex", "split_interactions", "binary_csr"):
        setattr(pipeline, name, timed(name, getattr(pipeline, name)))
    before = peak_rss_mib()
    started = time.perf_counter()
    split = pipeline.load_split(pipeline.DataConfig(path=argv[1], split="random"))
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    stats = pipeline.describe(split)
    described = time.perf_counter() - started
    return {
        "seconds": loaded,
        "steps": {name: round(value, 2) for name, value in steps.items()},
        "describe_seconds": described,
        "peak_mib": peak_rss_mib(),
        "start_mib": before,
        "interactions_after": stats["interactions"],
        "users": stats["users"],
        "items": stats["items"],
    }


def run_child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "_child", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def pipeline_sizes(sizes: list[int], cache: Path) -> list[dict[str, Any]]:
    rows = []
    cache.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        path = cache / f"synthetic-{size}.parquet"
        row: dict[str, Any] = {"what": "pipeline", "interactions": size}
        if not path.is_file():
            generated = run_child("generate", str(size), str(path))
            row["generate_seconds"] = generated.get("seconds")
            row["generate_peak_mib"] = generated.get("peak_mib")
        row["file_mib"] = path.stat().st_size / 2**20 if path.is_file() else None
        row.update(run_child("pipeline", str(path)))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def epochs(dataset: str, processes: list[int], dim: int) -> list[dict[str, Any]]:
    rows = []
    for count in processes:
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += ["--nproc-per-node", str(count), "-m", "hlrm", "-q", "train"]
            command += ["--dataset", dataset, "--model", "cml", "--emb-size", str(dim)]
            command += ["--epochs", "1", "--select-by", "valid_loss", "--patience", "0"]
            command += ["--device", "cpu", "--run-dir", f"{tmp}/run"]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            wall = time.perf_counter() - started
            row: dict[str, Any] = {"what": "epoch", "dataset": dataset, "processes": count}
            if done.returncode != 0:
                row["error"] = done.stderr.strip().splitlines()[-1]
            else:
                history = pd.read_csv(f"{tmp}/run/history.csv")
                row.update(epoch_seconds=float(history["seconds"].iloc[-1]), wall_seconds=wall)
                row["train_loss"] = float(history["train_loss"].iloc[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        print(json.dumps(child(argv[1:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("pipeline", "epoch", "all"))
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "hlrm-scale")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--dim", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"# {uptime()}", flush=True)
    rows = []
    if args.what in ("pipeline", "all"):
        sizes = [int(s) for s in args.sizes.split(",")]
        rows += pipeline_sizes(sizes, args.cache)
    if args.what in ("epoch", "all"):
        rows += epochs(args.dataset, [int(p) for p in args.processes.split(",")], args.dim)
    print(f"# {uptime()}", flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
