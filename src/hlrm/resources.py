"""Memory guards: a configuration whose tensors cannot fit is refused with one line before
anything is allocated, instead of ending in an allocator error or a ``MemoryError`` halfway.

Every estimate here is a **lower bound** (the largest tensors a step must hold, nothing for
temporaries or the allocator's slack), so a refusal is certain to be right and a configuration
that fits is never refused; what the bound misses is still caught as a ``MemoryError`` by the
command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hlrm.errors import ConfigError

if TYPE_CHECKING:
    from hlrm.config import RunConfig
    from hlrm.data.matrix import SplitData

FLOAT = 4  # bytes of a float32
#: Copies of every trained parameter Adam keeps: the weights, their gradient, two moments.
ADAM_COPIES = 4
#: Bytes per (user, rank) cell of a ranking: the int64 item, the hit flag, and five float64
#: running sums of the metrics (:func:`hlrm.evaluation.metrics.ranking_metrics`).
RANKING_CELL = 8 + 1 + 5 * 8
#: Models whose user and item embeddings are trained with Adam (the others are fitted in closed
#: form or not at all).
EMBEDDING_MODELS = {
    "cml", "lrml", "hlr", "hlr++", "cml-ease", "hlr-ease", "hlr++-ease", "transcf", "adacml",
    "bpr",
}  # fmt: skip


def available_memory(device: object = "cpu") -> int | None:
    """Bytes this process can still allocate on ``device``: free GPU memory for CUDA; for the
    CPU the kernel's estimate of available memory, lowered by a cgroup memory limit. ``None``
    when unknown."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(str(device)))[0])
    estimates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                estimates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limit = _cgroup_memory_left()
    if limit is not None:
        estimates.append(limit)
    return min(estimates) if estimates else None


def _cgroup_memory_left() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = int(Path(limit_file).read_text().strip())
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit < 1 << 60:  # cgroup v1 writes a huge number for "no limit"
            return max(0, limit - usage)
    return None


def size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def require(needed: int, what: str, hint: str, device: object = "cpu") -> None:
    """Refuse ``what`` when its ``needed`` bytes (a lower bound) exceed what is available."""
    available = available_memory(device)
    if available is not None and needed > available:
        raise ConfigError(
            f"{what} needs at least {size(needed)} of memory, more than the {size(available)} "
            f"available; {hint}"
        )


def check_ranking(n_users: int, depth: int, what: str) -> None:
    """The ranked lists and metric sums of ``n_users`` users to ``depth`` items (host memory:
    the metrics are computed with NumPy whatever the device)."""
    require(
        n_users * depth * RANKING_CELL,
        what,
        "use smaller cut-offs (--k) or evaluate a sample of users (--eval-size)",
    )


def check_training(config: RunConfig, split: SplitData) -> None:
    """The model's parameters with Adam's state, one batch's negatives, and the rankings of
    the final evaluation and of the validation metric, against the memory of the training
    device. ``config`` must be resolved."""
    train, params = config.train, config.model.params
    device = _device(train.device)
    name = config.model.name
    dim = params.get("dim")
    if name in EMBEDDING_MODELS and isinstance(dim, int):
        rows = split.n_users + split.n_items + int(params.get("n_slots") or 0)
        require(
            rows * dim * FLOAT * ADAM_COPIES,
            f"--emb-size {dim} for {split.n_users:,} users and {split.n_items:,} items "
            f"(weights, gradients and Adam's two moments)",
            "use a smaller --emb-size",
            device,
        )
        per_negative = train.batch_size if train.shared_negatives else train.batch_size * dim
        require(
            train.negatives * per_negative * FLOAT,
            f"--negatives {train.negatives:,} with --batch-size {train.batch_size:,}"
            + ("" if train.shared_negatives else f" and --emb-size {dim}"),
            "use fewer --negatives or a smaller --batch-size",
            device,
        )
    test_users = int((split.test.getnnz(axis=1) > 0).sum())
    depth = min(max(config.eval.ks), split.n_items)
    check_ranking(test_users, depth, f"--k {max(config.eval.ks):,} over {test_users:,} users")
    _, at, k = str(train.select_by).partition("@")
    if at and k.isdigit():
        valid_users = int((split.valid.getnnz(axis=1) > 0).sum())
        depth = min(int(k), split.n_items)
        check_ranking(valid_users, depth, f"--select-by {train.select_by}")


def _device(name: Any) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)
