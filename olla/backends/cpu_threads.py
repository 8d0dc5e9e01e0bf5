"""How many threads llama.cpp gets on the CPU when neither `num_thread` nor OLLA_NUM_THREADS says.

llama.cpp's threads meet at a barrier after every op of the graph, so a step goes at the pace of
its slowest thread: one that another process, or olla's own daemon serving the streams, keeps off
its CPU holds all the others up, op after op. Measured on the 2-core AMD EPYC (KVM) that runs
olla's tests: SmolLM2-135M through a real `olla serve`, tok/s of all streams together, medians
of 3 rounds (scripts/bench_threads; docs/benchmarks.md, 2026-12-07):

    clients                                 2 threads: 1 / 8 / 32     1 thread: 1 / 8 / 32
    a quiet machine                                 49 / 68 / 78            33 / 35 / 37
    and one busy process                            17 /  - / 16            36 /  - / 39
    ~1 core of other work (a niced build)          0.3 / 1.4 / 0.7          39 / 41 / 38
    that, and a busy process pinned to a CPU       0.2 / 0.2 / 0.2          16 / 16 / 15

Both CPUs give 1.5 to 2 times the throughput on a machine doing nothing else; beside one busy
process less than half of one thread's, and on a machine shared with more work (here: other
sessions' tests and builds) 30 to 130 times less (in the shared run not shown, 4 to 100). A
daemon shares its machine, so olla leaves room: the physical cores where SMT gives each a spare
sibling (the daemon and the rest run there), else the CPUs this process may use less one, and
at least one. A machine kept for olla alone gets its cores back with OLLA_NUM_THREADS (or the
option num_thread).

llama.cpp's own default is the physical cores (`cpu_get_num_math` in common/common.cpp), without
regard to affinity, quota or anything else running; Ollama passes no thread count to llama.cpp
and so takes that (before, it passed its count of performance cores).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

SYS_CPU = Path("/sys/devices/system/cpu")
CGROUP = Path("/sys/fs/cgroup")


def choose_threads(num_cpus: int, num_cores: int) -> int:
    """Threads for `num_cpus` usable CPUs on `num_cores` physical cores: the cores when SMT
    leaves siblings spare for the daemon, else one CPU less than there are (at least one)."""
    if num_cores < num_cpus:
        return max(1, num_cores)
    return max(1, num_cpus - 1)


def default_threads(
    cpus: Iterable[int] | None = None,
    siblings: Callable[[int], str | None] | None = None,
    quota: Callable[[], float | None] | None = None,
) -> int:
    """olla's thread count for this process: the CPUs it may use (affinity, narrowed by a
    cgroup's CPU quota) and their physical cores, by `choose_threads`. Each argument replaces
    what the system says (None: ask it), for tests."""
    usable = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    core_of = siblings or _siblings
    cores = {core_of(cpu) or str(cpu) for cpu in usable}  # unknown topology: a core per CPU
    limit = (quota or _cgroup_quota)()
    num_cpus, num_cores = len(usable), len(cores)
    if limit is not None and limit < num_cpus:
        num_cpus = max(1, math.ceil(limit))
        num_cores = min(num_cores, num_cpus)
    return choose_threads(num_cpus, num_cores)


def _siblings(cpu: int) -> str | None:
    """The CPUs that share `cpu`'s core, as the kernel lists them: one key per physical core."""
    try:
        return (SYS_CPU / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip()
    except OSError:
        return None


def _cgroup_quota() -> float | None:
    """CPUs' worth of time this process's cgroup may use, if it has a quota (a container's
    `--cpus`): cgroup v2's `cpu.max`, or v1's `cpu.cfs_quota_us` over `cpu.cfs_period_us`."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        where = group.lstrip("/")
        if controllers == "":
            fields = _read(CGROUP / where / "cpu.max").split()
            quota, period = (fields + ["max", "0"])[:2]
        elif "cpu" in controllers.split(","):
            base = CGROUP / controllers / where
            quota, period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
        else:
            continue
        if quota.isdigit() and period.isdigit() and int(period) > 0:
            return int(quota) / int(period)  # v1's -1 and v2's "max": no quota
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
