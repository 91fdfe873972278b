"""What this process may use of its machine."""

from __future__ import annotations

import math
import os
from pathlib import Path

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD", or "max PERIOD"


def usable_cores() -> int:
    """The CPU cores this process may keep busy: its affinity (taskset, cpusets), within
    its container's CPU quota (``docker --cpus``, a Kubernetes CPU limit), else every
    core the machine has."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cpu_quota()
    return max(1, min(cores, quota)) if quota else cores


def _cpu_quota() -> int | None:
    """The cgroup's CPU quota in whole cores (rounded up), or None when it has none."""
    try:
        quota, period = CPU_MAX.read_text().split()[:2]
        return math.ceil(int(quota) / int(period))
    except (OSError, ValueError):  # no cgroup v2 here, or "max": no quota
        return None
