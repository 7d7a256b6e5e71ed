"""Scaling of HLR scoring: wall time and peak extra memory of top-k lists for a few users as the
catalogue grows (synthetic items, up to 1M) and as the pool size P grows, for the broadcast
reference (only where its largest tensor stays under 1 GiB), the factorised ``score`` and the
default (exact pruned) path. Random official-init parameters (d = 100, N = 20), every pool full.

Each point runs in a fresh child process (peak memory as in ``common.py``; the child first scores
a 100-item model to load libraries and thread pools, then the measured one). Prints a table and
one JSON line per point; ``--plot`` writes a PNG with the four curves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

import common
from hlrm.models import History, create_model

COLUMNS = ["sweep", "items", "history_size", "scorer", "seconds", "users_per_s", "peak_mib"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", default="1000,10000,100000,1000000")
    parser.add_argument("--history-sizes", default="0,5,10,20,50,100,200")
    parser.add_argument("--items-for-p", type=int, default=10_000, help="catalogue of the P sweep")
    parser.add_argument("--p-for-items", type=int, default=50, help="P of the item sweep")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--scorers", default=",".join(common.SCORERS))
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG here")
    common.add_run_options(parser, device_and_seed=False)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def synthetic(n_items: int, history_size: int, n_users: int) -> tuple[Any, History]:
    """A random HLR over ``n_items`` items and full pools of ``history_size`` random items."""
    torch.manual_seed(0)
    model = create_model("hlr", n_users, n_items, history_size=history_size).eval()
    generator = torch.Generator().manual_seed(1)
    items = torch.randint(n_items, (n_users, history_size), generator=generator)
    return model, History(items, torch.ones_like(items, dtype=torch.bool))


def run_point(point: dict[str, Any]) -> dict[str, float]:
    """The child: warm up on a tiny model, then time and measure one scorer on ``point``."""
    torch.set_num_threads(point["threads"])
    users = np.arange(point["users"])

    def lists(n_items: int) -> tuple[float, int]:
        model, pools = synthetic(n_items, point["history_size"], point["users"])
        exclude = sp.csr_matrix((point["users"], n_items), dtype=np.float32)
        before = common.reset_peak_rss()
        started = time.perf_counter()
        common.rank(model, point["scorer"], users, pools, exclude, point["k"], None)
        seconds = time.perf_counter() - started
        return seconds, (common.resident_kib()[0] - before) * 1024

    lists(100)
    seconds, peak = lists(point["items"])
    return {"seconds": seconds, "peak_bytes": peak}


def measure(point: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(point)],
        check=True,
        capture_output=True,
        text=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        **point,
        "seconds": measured["seconds"],
        "users_per_s": point["users"] / measured["seconds"],
        "peak_mib": measured["peak_bytes"] / common.MIB,
    }


def points(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (sweep, size, scorer) point; broadcast only where one user's (I, 1+P, d) tensor is
    at most :data:`common.BROADCAST_ELEMENTS`."""
    base = {"users": args.users, "k": args.k, "threads": args.threads}
    sizes = [("items", int(n), args.p_for_items) for n in args.items.split(",")]
    sizes += [("history_size", args.items_for_p, int(p)) for p in args.history_sizes.split(",")]
    chosen = []
    for sweep, n_items, history_size in sizes:
        for scorer in args.scorers.split(","):
            too_big = n_items * (1 + history_size) * 100 > common.BROADCAST_ELEMENTS
            if scorer == "broadcast" and too_big:
                continue
            chosen.append(
                {
                    **base,
                    "sweep": sweep,
                    "items": n_items,
                    "history_size": history_size,
                    "scorer": scorer,
                }
            )
    return chosen


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Four log-scale panels: time and memory against items, then against P."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(10, 8))
    for column, (sweep, label) in enumerate(
        [("items", "items (P = 50)"), ("history_size", "pool size P (10k items)")]
    ):
        for scorer in common.SCORERS:
            chosen = [r for r in rows if r["sweep"] == sweep and r["scorer"] == scorer]
            if not chosen:
                continue
            x = [r["items"] if sweep == "items" else r["history_size"] for r in chosen]
            axes[0][column].plot(x, [r["seconds"] for r in chosen], "o-", label=scorer)
            axes[1][column].plot(x, [max(r["peak_mib"], 0.1) for r in chosen], "o-", label=scorer)
        for row, unit in enumerate(["seconds", "peak extra MiB"]):
            axis = axes[row][column]
            axis.set_xscale("symlog" if sweep == "history_size" else "log")
            axis.set_yscale("log")
            axis.set_xlabel(label)
            axis.set_ylabel(unit)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
    users = rows[0]["users"] if rows else 0
    figure.suptitle(f"HLR top-10 of {users} users, random parameters, d = 100, N = 20 (CPU)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child is not None:
        print(json.dumps(run_point(json.loads(args.child))))
        return
    info = common.machine()
    print(f"# {info}")
    print(f"# command: {' '.join(['python', *sys.argv])}")
    rows = []
    for point in points(args):
        row = measure(point)
        rows.append(row)
        common.emit(row, info)
    common.finish(rows, COLUMNS, info, args.json_out)
    if args.plot is not None:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
