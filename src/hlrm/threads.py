"""Thread and OpenMP defaults, applied by ``import hlrm`` before anything imports torch.

Nothing here imports torch: the OpenMP runtime reads these variables once, when torch is first
imported, so they must be in the environment before that.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus() -> int | None:
    """How many CPUs this process may really use: the CPUs it is allowed to run on, further
    limited by a cgroup CPU quota (a container given 2 CPUs of a 64-core host). ``None`` when
    neither is known."""
    counts = []
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        counts.append(quota)
    return min(counts) if counts else None


def _cgroup_cpu_quota() -> int | None:
    """The CPU quota of a cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``), rounded up."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        quota, period = (text[0], text[1]) if len(text) == 2 else ("max", "1")
    except (OSError, IndexError):
        try:
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_value, period_value = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    if quota_value <= 0 or period_value <= 0:
        return None
    return max(1, math.ceil(quota_value / period_value))


def set_thread_defaults() -> None:
    """Thread and OpenMP settings that are fast by default; a value the user set always wins.

    The OpenMP runtime reads them once, when torch is first imported, so this runs here, before
    any hlrm module imports torch.

    - PyTorch's OpenMP runtime spin-waits between parallel regions by default; on a machine with
      few or busy cores that made training up to 10x slower (``OMP_WAIT_POLICY=PASSIVE``).
    - PyTorch starts one thread per core of the host even when the process may use fewer (a
      CPU affinity mask, a container's CPU quota), and oversubscribed threads wait for each
      other; ``OMP_NUM_THREADS`` is lowered to the usable CPUs only in that case, so on an
      unrestricted machine PyTorch's own choice (one thread per physical core) stands.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "OMP_NUM_THREADS" not in os.environ:
        usable = usable_cpus()
        if usable is not None and usable < (os.cpu_count() or usable):
            os.environ["OMP_NUM_THREADS"] = str(usable)
