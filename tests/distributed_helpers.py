"""Run a function in several gloo processes (torch.multiprocessing) and collect what each returns.

The function must be importable by name (a module-level function of a test module): the
processes are spawned, not forked, as torchrun starts them.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_environment(world: int, rank: int, port: int) -> dict[str, str]:
    """The variables torchrun gives each of its processes (one node)."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(world),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world),
    }


def _entry(rank: int, world: int, port: int, fn: Callable, args: tuple, out: str) -> None:
    import torch

    from hlrm import distributed

    os.environ.update(torchrun_environment(world, rank, port))
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    result = fn(*args)
    with open(Path(out) / f"{rank}.pkl", "wb") as handle:
        pickle.dump(result, handle)
    distributed.barrier()


def run_ranks(fn: Callable, world: int, *args: Any) -> list[Any]:
    """``fn(*args)`` in each of ``world`` processes joined by gloo; the results in rank order."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_entry, args=(world, free_port(), fn, args, out), nprocs=world, join=True)
        results = []
        for rank in range(world):
            with open(Path(out) / f"{rank}.pkl", "rb") as handle:
                results.append(pickle.load(handle))
        return results
