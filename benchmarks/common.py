"""Shared machinery of the benchmark scripts: datasets, briefly trained or random models, the three
scorers compared by ``scoring.py`` and ``scaling.py``, peak-memory measurement and reporting.

Peak memory (CPU) is measured in a fresh child process per scorer, because torch allocates outside
``tracemalloc`` and a process that already scored keeps freed memory cached: the child loads the
job (model, users, pools, exclusions) from a file, runs the scorer once on two users (libraries,
thread pools), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs the measured
work and reports ``VmHWM - VmRSS before``: the resident memory the scorer added at its peak. On
CUDA the child reports ``torch.cuda.max_memory_allocated`` growth instead.

Run as ``python benchmarks/common.py JOB`` it is that child.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from hlrm.data.matrix import SplitData
from hlrm.data.pipeline import DataConfig, load_split
from hlrm.evaluation.ranking import top_k
from hlrm.models import History, Recommender, create_model, hlr, lrml
from hlrm.models.base import pool_rows
from hlrm.models.memory import MemoryTranslationModel
from hlrm.training.trainer import TrainConfig, Trainer

#: The published training recipe (hinge, one uniform negative, selection by validation loss):
#: the benchmarks' figures in docs/performance.md were measured with it, so it stays pinned now
#: that the library's default recipe is a sampled softmax over many negatives.
PUBLISHED_RECIPE = {
    "loss": "hinge",
    "negatives": 1,
    "shared_negatives": False,
    "select_by": "valid_loss",
    "patience": 0,
}

#: The three scorers: the official broadcast form, the exact factorised ``model.score`` over
#: every item, and the library default (the exact pruned path where the model has one).
#: ``plain`` (optional, HLR / HLR++): ``factorised`` with the PyTorch backend forced, to compare
#: with the Triton kernel that ``factorised`` uses on CUDA.
SCORERS = ("broadcast", "factorised", "default")
#: Users per broadcast call in the official evaluation (spec 6), capped by BROADCAST_ELEMENTS.
OFFICIAL_CHUNK = {"cml": 100, "lrml": 100, "hlr": 5, "hlr++": 5}
#: Bound on the largest broadcast intermediate, (U, I, S, d) floats: 1 GiB of float32.
BROADCAST_ELEMENTS = 1 << 28
MIB = 1 << 20


def load(dataset: str) -> SplitData:
    """A registered dataset with its default preprocessing (``HLRM_DATA_DIR``)."""
    return load_split(DataConfig(dataset=dataset).resolved())


def model_options(name: str, history_size: int) -> dict[str, Any]:
    return {"history_size": history_size} if name in ("hlr", "hlr++") else {}


def build_model(
    name: str,
    split: SplitData,
    *,
    history_size: int = 50,
    train_epochs: int = 0,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Recommender:
    """A model with random (official init) or briefly trained parameters.

    Training uses the library's :class:`Trainer` (lr 1e-3, margin 0.5, batch 1000) for
    ``train_epochs`` epochs; with ``cache_dir`` the weights are kept there and reused, so one
    expensive training serves several benchmark invocations.
    """
    torch.manual_seed(seed)
    model = create_model(name, split.n_users, split.n_items, **model_options(name, history_size))
    if train_epochs <= 0:
        return model.eval()
    cached = None
    if cache_dir is not None:
        tag = f"{split.name}-{name}-p{history_size}-e{train_epochs}-s{seed}.pt"
        cached = cache_dir / tag.replace("+", "p")
        if cached.is_file():
            model.load_state_dict(torch.load(cached))
            return model.eval()
    config = TrainConfig(epochs=train_epochs, lr=1e-3, margin=0.5, device="cpu", **PUBLISHED_RECIPE)
    trainer = Trainer(model, split, config, seed=seed, progress=False)
    trainer.fit()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cached)
    return model.eval()


def cml_broadcast_scores(model: Recommender, users: Tensor, history: History | None) -> Tensor:
    """CML's broadcast form: the (U, I, d) differences are materialised."""
    with torch.no_grad():
        user = model.user_embeddings[users].unsqueeze(1)
        return -(user - model.item_embeddings.unsqueeze(0)).pow(2).sum(-1)


REFERENCES: dict[str, Callable[..., Tensor]] = {
    "cml": cml_broadcast_scores,
    "lrml": lrml.broadcast_scores,
    "hlr": hlr.broadcast_scores,
    "hlr++": hlr.broadcast_scores,
}


def broadcast_chunk(model: Recommender) -> int:
    """Users per broadcast call: the official chunk, fewer if its largest tensor would exceed
    :data:`BROADCAST_ELEMENTS`."""
    slots = 1 + getattr(model, "history_size", 0) if model.uses_history else 1
    per_user = model.n_items * slots * model.dim
    return max(1, min(OFFICIAL_CHUNK[model.name], BROADCAST_ELEMENTS // per_user))


class Broadcast(Recommender):
    """``model`` scored with its broadcast reference, ``chunk`` users per call (for ``top_k``)."""

    trainable = False

    def __init__(self, model: Recommender, chunk: int) -> None:
        super().__init__(model.n_users, model.n_items)
        self.name = model.name
        self.uses_history = model.uses_history
        self.inner = model
        self.chunk = chunk

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        reference = REFERENCES[self.inner.name]
        parts = []
        for start in range(0, len(users), self.chunk):
            rows = slice(start, start + self.chunk)
            parts.append(reference(self.inner, users[rows], pool_rows(history, rows)))
        return torch.cat(parts)


class FixedPools:
    """Stands in for a :class:`~hlrm.training.history.HistorySampler`: the pools drawn once for
    ``users``, so every scorer ranks with exactly the same history."""

    def __init__(self, users: np.ndarray, pools: History) -> None:
        self.position = {int(u): row for row, u in enumerate(users)}
        self.pools = pools

    def sample(
        self, users: Tensor, exclude: Tensor | None = None, generator: torch.Generator | None = None
    ) -> History:
        rows = torch.tensor([self.position[int(u)] for u in users.tolist()])
        rows = rows.to(self.pools.items.device)
        return pool_rows(self.pools, rows)


@dataclass
class Job:
    """Everything one scorer needs to rank ``users``; what the memory child process receives."""

    model_name: str
    hparams: dict[str, Any]
    n_users: int
    n_items: int
    state: dict[str, Tensor]
    users: np.ndarray
    pools: History | None
    exclude: sp.csr_matrix
    k: int
    scorer: str
    block_users: int | None
    device: str = "cpu"
    memory_mib: float | None = None

    @classmethod
    def of(
        cls,
        model: Recommender,
        users: np.ndarray,
        pools: History | None,
        exclude: sp.csr_matrix,
        k: int,
        scorer: str,
        block_users: int | None,
        device: str = "cpu",
        memory_mib: float | None = None,
    ) -> Job:
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        return cls(
            model.name,
            dict(model.hparams),
            model.n_users,
            model.n_items,
            state,
            users,
            pools,
            exclude,
            k,
            scorer,
            block_users,
            device,
            memory_mib,
        )

    def model(self) -> Recommender:
        model = create_model(self.model_name, self.n_users, self.n_items, **self.hparams)
        model.load_state_dict(self.state)
        return model.to(self.device).eval()


def rank(
    model: Recommender,
    scorer: str,
    users: np.ndarray,
    pools: History | None,
    exclude: sp.csr_matrix,
    k: int,
    block_users: int | None,
    device: str = "cpu",
    memory_mib: float | None = None,
) -> np.ndarray:
    """Top-k lists of ``users`` with one of :data:`SCORERS`, through the library's ``top_k``
    (``memory_mib``: its scoring memory budget; None keeps the library's default)."""
    sampler = FixedPools(users, pools) if pools is not None else None
    ranked_model = model
    if scorer == "broadcast":
        ranked_model = Broadcast(model, broadcast_chunk(model))
        block_users = len(users)  # Broadcast chunks the users itself
    if scorer == "plain" and hasattr(model, "scoring_backend"):
        backend = model.scoring_backend
        model.scoring_backend = "plain"
        try:
            return rank(
                model, "factorised", users, pools, exclude, k, block_users, device, memory_mib
            )
        finally:
            model.scoring_backend = backend
    return top_k(
        ranked_model,
        users,
        exclude,
        k,
        history_sampler=sampler,
        block_users=block_users,
        device=device,
        prune=scorer == "default",
        memory_mib=memory_mib,
    )


def has_pruning(model: Recommender, users: Tensor, pools: History | None) -> bool:
    """Whether the default scorer of ``model`` is the pruned path (else it is ``score``)."""
    return (
        isinstance(model, MemoryTranslationModel)
        and model.coefficient_bounds(users, pools) is not None
    )


def forced_pruned_scores(
    model: MemoryTranslationModel, users: Tensor, pools: History | None, excluded: Tensor, k: int
) -> Tensor:
    """``model.pruned_scores`` without its give-up limit, to measure what the bound prunes."""
    limit = model.prune_limit
    model.prune_limit = 1.0
    try:
        return model.pruned_scores(users, pools, excluded, k)
    finally:
        model.prune_limit = limit


def reset_peak_rss() -> int:
    """Resets the kernel's peak-RSS mark of this process to its current RSS; returns the RSS
    (KiB) it was reset to."""
    Path("/proc/self/clear_refs").write_text("5")
    return resident_kib()[1]


def resident_kib() -> tuple[int, int]:
    """(peak RSS since the last reset, current RSS) of this process, in KiB."""
    status = Path("/proc/self/status").read_text()
    fields = dict(re.findall(r"(VmHWM|VmRSS):\s+(\d+)", status))
    return int(fields["VmHWM"]), int(fields["VmRSS"])


def _child(job_path: str) -> None:
    job: Job = torch.load(job_path, weights_only=False)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    model = job.model()
    pools = None if job.pools is None else job.pools.to(job.device)

    def ranked(users: np.ndarray) -> np.ndarray:
        return rank(
            model, job.scorer, users, pools, job.exclude, job.k, job.block_users, job.device,
            job.memory_mib,
        )  # fmt: skip

    ranked(job.users[:2])  # load libraries and thread pools before the peak is reset
    if job.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        started = time.perf_counter()
        ranked(job.users)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = reset_peak_rss()
        started = time.perf_counter()
        ranked(job.users)
        seconds = time.perf_counter() - started
        peak = (resident_kib()[0] - before) * 1024
    print(json.dumps({"peak_bytes": peak, "seconds": seconds}))


def measure_in_child(job: Job) -> dict[str, float]:
    """Runs ``job`` in a fresh process; returns its peak extra memory (bytes) and seconds."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.pt"
        torch.save(job, path)
        result = subprocess.run(
            [sys.executable, __file__, str(path)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "BENCH_THREADS": str(torch.get_num_threads())},
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_of(work: Callable[[], Any], repeats: int, budget_s: float = 30.0) -> tuple[float, Any]:
    """Smallest wall time of up to ``repeats`` runs of ``work`` (fewer once ``budget_s`` seconds
    were spent) and the last result: the machine is shared, the least disturbed run is the best
    estimate of the cost."""
    times: list[float] = []
    result = None
    while len(times) < max(1, repeats) and sum(times) < budget_s:
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result


def machine() -> dict[str, Any]:
    """What a figure was measured on: CPU model, cores, torch, Python, date."""
    cpu = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"Model name:\s+(.+)", lscpu)
        cpu = found.group(1).strip() if found else cpu
    except (OSError, subprocess.CalledProcessError):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
    }


def add_run_options(parser: argparse.ArgumentParser, *, device_and_seed: bool = True) -> None:
    """The options every benchmark script shares: torch threads and the JSON-lines file, and
    (unless the script has no use for them) the device and the seed."""
    if device_and_seed:
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json-out", type=Path, default=None, help="also append the JSON lines")


def emit(row: dict[str, Any], info: dict[str, Any]) -> None:
    """Print one finished row as a JSON line (with the machine), as soon as it is measured."""
    print(json.dumps({**row, "machine": info}), flush=True)


def finish(
    rows: list[dict[str, Any]], columns: list[str], info: dict[str, Any], json_out: Path | None
) -> None:
    """Print the aligned table of every row; append their JSON lines to ``json_out`` if given."""
    print()
    print_table(rows, columns)
    if json_out is not None:
        with json_out.open("a") as out:
            for row in rows:
                out.write(json.dumps({**row, "machine": info}) + "\n")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned text table of ``rows`` restricted to ``columns``."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


if __name__ == "__main__":
    _child(sys.argv[1])


def print_header(split: SplitData, info: dict[str, Any]) -> None:
    """The lines a benchmark's output starts with: data, machine, command, thread waiting
    policy and load (figures in docs/ carry them)."""
    print(f"# {split.name}: {split.n_users} users, {split.n_items} items, {split.train.nnz} train")
    print(f"# {info}")
    print(f"# command: {' '.join(['python', *sys.argv])}")
    print(f"# OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()}")
