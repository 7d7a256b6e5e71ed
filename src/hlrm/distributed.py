"""Several processes, one result: the little hlrm needs from ``torch.distributed``.

``torchrun --nproc-per-node N -m hlrm train ...`` starts N copies of hlrm with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in their environment;
:func:`init_from_env` joins them into one process group (gloo between CPU processes; on CUDA,
NCCL for the tensors on the GPU and gloo for the few host-side numbers hlrm exchanges itself).
Without those variables, or with ``WORLD_SIZE=1``, nothing here does anything and every helper
answers as a single process would: ``rank() == 0``, ``world_size() == 1``.

What is distributed, and how it stays exact:

* **Training** (:mod:`hlrm.training.trainer`): every rank draws the same global batches from the
  same seed and trains on its own contiguous rows of each (:func:`shard`); PyTorch's
  ``DistributedDataParallel`` averages the gradients, so the global batch and the seed define the
  run, whatever the number of processes.
* **Evaluation** (:mod:`hlrm.evaluation.protocol`): the evaluated users are cut into contiguous
  shards of whole scoring blocks, so each rank ranks exactly the blocks a single process would
  (same pools, same floating-point operations). Metric sums travel as :func:`exact_parts` and
  are added with :func:`math.fsum` (:func:`gather_sums`), so the averages are the correctly
  rounded ones, equal to the single-process values whatever the number of ranks.
* **Files**: only rank 0 writes (:func:`is_main`); the others compute alongside it.
"""

from __future__ import annotations

import atexit
import datetime as dt
import inspect
import math
import os
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hlrm.errors import ConfigError

#: How long a collective waits for the other ranks before failing (a rank that died, a
#: rendezvous that never completes): long enough for an epoch of a large model between two
#: synchronisation points, short enough that a stuck job ends.
TIMEOUT = dt.timedelta(minutes=30)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or any launcher setting the same
    variables) as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_main() -> bool:
    """Whether this process writes files and talks to the user (rank 0, or the only process)."""
    return rank() == 0


def init_from_env(device: str = "auto") -> bool:
    """Join the process group ``torchrun`` describes in the environment, if there is one;
    returns whether this process is one of several. ``device``: the run's device option, which
    chooses the backend (``cuda`` or ``auto`` with a GPU: NCCL, one GPU per local rank)."""
    if not launched():
        return False
    if active():
        return True
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ConfigError(
                f"WORLD_SIZE is set but {name} is not: start several processes with torchrun "
                f"--nproc-per-node N -m hlrm ..."
            )
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run one process")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available")
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local} has no GPU of its own ({torch.cuda.device_count()} here): "
                f"start at most that many processes per node"
            )
        torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    atexit.register(_leave)
    return True


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: torch.device) -> torch.device:
    """This rank's own GPU where ``device`` is CUDA (``cuda`` alone means the current one, which
    :func:`init_from_env` set to the local rank)."""
    if device.type == "cuda" and active():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def shard(n: int, unit: int = 1) -> slice:
    """This rank's contiguous share of ``n`` positions, cut at multiples of ``unit`` (whole
    blocks): rank r takes blocks ``[r·B/W, (r+1)·B/W)`` of the ``B = ceil(n / unit)``, so the
    shards differ by at most one block and, in rank order, cover ``0..n`` exactly once."""
    if unit < 1:
        raise ValueError(f"unit must be >= 1, not {unit}")
    blocks = -(-n // unit)
    world, me = world_size(), rank()
    first, last = me * blocks // world, (me + 1) * blocks // world
    return slice(min(first * unit, n), min(last * unit, n))


def barrier() -> None:
    if active():
        dist.barrier()


def all_min(array: np.ndarray) -> np.ndarray:
    """Elementwise minimum of an integer array over the ranks (exact)."""
    return _all_reduce_integers(array, "MIN")


def all_sum(array: np.ndarray) -> np.ndarray:
    """Elementwise sum of an integer array over the ranks (exact)."""
    return _all_reduce_integers(array, "SUM")


def _all_reduce_integers(array: np.ndarray, op: str) -> np.ndarray:
    """``array`` as int64 reduced over the ranks by ``dist.ReduceOp.<op>``; itself alone."""
    if not active():
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
    return tensor.numpy()


def all_gather_floats(array: np.ndarray) -> np.ndarray:
    """Every rank's float64 ``array`` (same shape on each), stacked in rank order."""
    local = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if not active():
        return local.numpy()[None]
    gathered = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(gathered, local)
    return torch.stack(gathered).numpy()


def gather_to_main(value: Any) -> list[Any] | None:
    """Every rank's ``value`` (picklable) in rank order on rank 0; None on the others."""
    if not active():
        return [value]
    gathered: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


# ---- exact sums ----------------------------------------------------------------------------------
#: Terms of :func:`exact_parts`: their sum differs from the exact sum of the values by less than
#: 2^-150 of it, far below one float64 rounding step.
PARTS = 3


def exact_parts(values: Sequence[float] | np.ndarray) -> list[float]:
    """Floats whose sum is the exact sum of ``values`` (to far below a rounding step): the
    correctly rounded sum, then the correctly rounded remainders. Adding every rank's parts with
    :func:`math.fsum` gives the correctly rounded total of all values, the same number one
    process gets from ``math.fsum`` over all of them — unlike adding per-rank float sums, whose
    result depends on how the values were cut."""
    listed = values.tolist() if isinstance(values, np.ndarray) else list(values)
    parts: list[float] = []
    for _ in range(PARTS):
        parts.append(math.fsum(chain(listed, (-p for p in parts))))
    return parts


def gather_sums(parts: np.ndarray) -> np.ndarray:
    """``parts`` (..., PARTS) of :func:`exact_parts` from every rank, added exactly: the correctly
    rounded sums (...) over all ranks' values."""
    gathered = all_gather_floats(parts)  # (W, ..., PARTS)
    stacked = np.moveaxis(gathered, 0, -2)  # (..., W, PARTS)
    flat = stacked.reshape(-1, stacked.shape[-2] * stacked.shape[-1])
    return np.array([math.fsum(row) for row in flat.tolist()]).reshape(parts.shape[:-1])


# ---- training ------------------------------------------------------------------------------------
def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in ``DistributedDataParallel``: its parameters are broadcast from rank
    0 now, and every backward pass through it averages the gradients over the ranks."""
    from torch.nn.parallel import DistributedDataParallel

    if any(
        isinstance(m, torch.nn.Embedding) and m.sparse for m in module.modules()
    ):  # NCCL cannot reduce sparse gradients, and gloo's sparse path differs from the dense sum
        raise ConfigError("sparse embedding gradients cannot be averaged across processes")
    ids = [device.index] if device.type == "cuda" else None
    # Buffers (TransCF's neighbourhoods and its sparse averaging operators) follow from the data
    # and the parameters on every rank alike: DDP neither copies them from rank 0 at the start
    # (it cannot copy sparse ones) nor before every forward (the option's name since torch 2.12).
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        module, [name for name, _ in module.named_buffers()]
    )
    no_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    # gradient_as_bucket_view: the gradients live in the buckets DDP reduces, not in a copy
    # beside them (one table-sized buffer less per rank).
    return DistributedDataParallel(module, device_ids=ids, gradient_as_bucket_view=True, **no_sync)


def all_sum_float(value: float) -> float:
    """``value`` summed over the ranks (a reported number, such as the epoch's loss)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())


def from_main(value: float) -> float:
    """Rank 0's ``value`` on every rank: decisions (keep this epoch? stop?) must agree."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())
