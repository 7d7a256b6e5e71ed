"""Tile sizes of the factorised HLR / HLR++ scorer, chosen by measurement on the machine.

The fastest (users, items) tile of :func:`hlrm.models.relation_scoring.plain_scores` depends on
the CPU (caches, the BLAS's kernels for each shape) and on the thread count: block sizes tuned on
an Intel Xeon were up to 10× off on an AMD EPYC (issue 11). On first use for a model shape the
candidates that fit the memory budget are timed on a synthetic problem of that shape (8 users ×
512 items, two runs each: 0.3-0.7 s on 2 busy cores) and the fastest is kept, in
memory and in a JSON file in the user's cache directory, keyed by CPU model, thread count, torch
version, model kind, shape, dtype and budget.

The choice never changes a score (the plain scorer is bit-identical across tiles), only its
speed. ``HLRM_AUTOTUNE=0`` skips the measurement and uses :data:`DEFAULT_TILES` (for
reproducible benchmarking); ``HLRM_CACHE_DIR`` moves the cache (default
``$XDG_CACHE_HOME/hlrm`` or ``~/.cache/hlrm``, never the working directory).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from hlrm.models.relation_scoring import RelationProblem, plain_scores

log = logging.getLogger(__name__)

#: (users, items) per tile, timed by the autotune. Tiles of 64 items or fewer lose to the torch
#: call overhead of their ~20 operations; more than 8 users stop sharing the 16-column query GEMM.
CANDIDATES: tuple[tuple[int, int], ...] = (
    (1, 256),
    (1, 1024),
    (2, 256),
    (4, 128),
    (4, 256),
    (8, 128),
)
#: The tile used without measurement (``HLRM_AUTOTUNE=0``, devices other than the CPU).
DEFAULT_TILES = (4, 256)
#: Synthetic problem of the measurement: users, items.
MEASURE_SHAPE = (8, 512)
CACHE_FILE = "scoring-tiles.json"

_chosen: dict[str, tuple[int, int]] = {}


def autotune_enabled() -> bool:
    """False when ``HLRM_AUTOTUNE`` is 0 / false / no / off."""
    return os.environ.get("HLRM_AUTOTUNE", "1").strip().lower() not in {"0", "false", "no", "off"}


def cache_dir() -> Path:
    """``HLRM_CACHE_DIR``, else ``$XDG_CACHE_HOME/hlrm``, else ``~/.cache/hlrm``."""
    explicit = os.environ.get("HLRM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "hlrm"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def tune_key(problem: RelationProblem, budget: int) -> str:
    """What a measured choice is valid for: machine, software, model kind and shape."""
    dim = problem.user.shape[1]
    return (
        f"{cpu_model()}|threads={torch.get_num_threads()}|torch={torch.__version__}|"
        f"{problem.kind}|d={dim}|S={problem.pool_width}|N={problem.n_slots}|"
        f"{str(problem.user.dtype).removeprefix('torch.')}|budget={budget}"
    )


def fitting(problem: RelationProblem, budget: int) -> list[tuple[int, int]]:
    """The candidates whose largest tensors stay within ``budget`` elements; when none does,
    one user × as many items as fit."""
    fits = [tile for tile in CANDIDATES if problem.tile_elements(*tile) <= budget]
    if fits:
        return fits
    per_item = max(problem.pool_width, 1) * problem.n_slots
    return [(1, max(1, budget // per_item))]


def choose_tiles(problem: RelationProblem, budget: int) -> tuple[int, int]:
    """The (users, items) tile for ``problem`` within ``budget`` elements: measured once per
    machine and shape on the CPU, :data:`DEFAULT_TILES` (or the largest that fits) elsewhere
    or without the autotune."""
    fits = fitting(problem, budget)
    if len(fits) == 1:
        return fits[0]
    default = DEFAULT_TILES if DEFAULT_TILES in fits else fits[-1]
    if problem.user.device.type != "cpu" or not autotune_enabled():
        return default
    key = tune_key(problem, budget)
    if key in _chosen:
        return _chosen[key]
    stored = _read_cache().get(key)
    tiles = tuple(stored["tiles"]) if isinstance(stored, dict) else None
    if tiles not in fits:
        tiles, timings = measure(problem, fits)
        _write_cache(key, tiles, timings)
    _chosen[key] = tiles
    return tiles


def synthetic(problem: RelationProblem, n_users: int, n_items: int) -> RelationProblem:
    """A problem of the same kind and shape as ``problem`` with official-init random values."""
    generator = torch.Generator().manual_seed(0)
    dim, width, n_slots = problem.user.shape[1], problem.pool_width, problem.n_slots
    dtype = problem.user.dtype

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype) * dim**-0.5

    mask = torch.ones(n_users, width, dtype=torch.bool)
    return RelationProblem(
        kind=problem.kind,
        user=normal(n_users, dim),
        pool=normal(n_users, width, dim),
        pool_mask=mask,
        keys=normal(dim, n_slots),
        memory=normal(n_slots, dim),
        attention_scale=1.0,
        beta=problem.beta,
        items=normal(n_items, dim),
        item_norm=1.0,
        item_mask=mask if problem.kind == "hlr++" else None,
    )


def measure(
    problem: RelationProblem, candidates: list[tuple[int, int]], repeats: int = 2
) -> tuple[tuple[int, int], dict[str, float]]:
    """The fastest of ``candidates`` (best of ``repeats`` runs each) on a synthetic problem of
    :data:`MEASURE_SHAPE`, and every candidate's seconds."""
    started = time.perf_counter()
    work = synthetic(problem, *MEASURE_SHAPE)
    with torch.inference_mode():
        plain_scores(work, *candidates[0])  # first-touch allocations and thread start-up
        timings = {}
        for tiles in candidates:
            best = float("inf")
            for _ in range(repeats):
                begun = time.perf_counter()
                plain_scores(work, *tiles)
                best = min(best, time.perf_counter() - begun)
            timings[f"{tiles[0]}x{tiles[1]}"] = best
    chosen = min(candidates, key=lambda tiles: timings[f"{tiles[0]}x{tiles[1]}"])
    log.debug(
        "scoring tiles for %s (S=%d, N=%d): %d users x %d items, measured in %.2f s",
        problem.kind,
        problem.pool_width,
        problem.n_slots,
        *chosen,
        time.perf_counter() - started,
    )
    return chosen, timings


def _read_cache() -> dict:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, tiles: tuple[int, int], timings: dict[str, float]) -> None:
    """Adds one measurement to the cache file; an unwritable cache only costs a re-measurement
    in the next process."""
    from hlrm.fileio import write_json

    data = _read_cache()
    data[key] = {"tiles": list(tiles), "seconds": timings}
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_json(cache_dir() / CACHE_FILE, data)
    except OSError as error:
        log.debug("could not write the scoring tile cache: %s", error)
