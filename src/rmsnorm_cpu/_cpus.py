"""How many CPUs this process may use: its affinity mask and its cgroup CPU quota.

The OpenMP default (``omp_get_max_threads``) counts the CPUs in the affinity
mask but not a container's CFS quota; a team larger than the quota gets
throttled every period, which is the 10-45x collapse users report.  So the
default thread count is capped by both (the reasoning of scikit-learn's
``_openmp_effective_n_threads`` and loky's ``cpu_count``).
"""

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _quota_cpus(quota, period):
    """CPUs a CFS quota grants (ceil), or None when unlimited."""
    try:
        quota, period = int(quota), int(period)
    except (TypeError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def _ancestors(root, path):
    """root/path, its parents, ..., root."""
    parts = [p for p in path.split("/") if p]
    return [os.path.join(root, *parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_limit(root=CGROUP_ROOT, proc_cgroup=PROC_CGROUP):
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None.

    Looks at the process's own cgroup and its ancestors (the tightest wins),
    and at the root of the mount, which is the container's own cgroup under a
    cgroup namespace.
    """
    limits = []
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2 unified
            for d in _ancestors(root, path):
                fields = (_read(os.path.join(d, "cpu.max")) or "").split()
                if len(fields) == 2:
                    limits.append(_quota_cpus(fields[0] if fields[0] != "max" else -1, fields[1]))
        elif "cpu" in controllers.split(","):  # v1
            for mount in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"):
                for d in _ancestors(os.path.join(root, mount), path):
                    limits.append(_quota_cpus(_read(os.path.join(d, "cpu.cfs_quota_us")),
                                              _read(os.path.join(d, "cpu.cfs_period_us"))))
    limits = [n for n in limits if n]
    return min(limits) if limits else None


_CGROUP_LIMIT = cgroup_cpu_limit()


def refresh():
    """Re-read the cgroup limit (after a fork the child may be in another cgroup)."""
    global _CGROUP_LIMIT
    _CGROUP_LIMIT = cgroup_cpu_limit()


def available_cpus():
    """CPUs this process may run on now: affinity mask, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return min(n, _CGROUP_LIMIT) if _CGROUP_LIMIT else n
