"""olla's default llama.cpp thread count, from a made-up machine's CPUs, cores and quota."""

from __future__ import annotations

import pytest

from olla.backends.cpu_threads import choose_threads, default_threads


@pytest.mark.parametrize(
    ("cpus", "cores", "threads"),
    [
        (1, 1, 1),  # nothing to leave
        (2, 2, 1),  # the 2-core EPYC: one for llama.cpp, one for the daemon and the rest
        (4, 4, 3),
        (64, 64, 63),
        (16, 8, 8),  # SMT: a thread per core; the daemon runs on the siblings
        (2, 1, 1),  # two siblings of one core
    ],
)
def test_threads_leave_room_for_the_daemon(cpus: int, cores: int, threads: int) -> None:
    assert choose_threads(cpus, cores) == threads


def test_the_cpus_this_process_may_use_and_their_cores_decide() -> None:
    def smt(cpu: int) -> str:  # cpu i and i + 8 share a core
        return f"{cpu % 8},{cpu % 8 + 8}"

    assert default_threads(range(16), smt, quota=lambda: None) == 8
    assert default_threads(range(4), smt, quota=lambda: None) == 3  # taskset to 4 CPUs of 4 cores
    assert default_threads([0, 8], smt, quota=lambda: None) == 1  # one core's two siblings
    assert default_threads(range(6), lambda cpu: None, quota=lambda: None) == 5  # topology unknown
    assert default_threads(range(16), smt, quota=lambda: 2.0) == 1  # a container's --cpus=2
    assert default_threads(range(16), smt, quota=lambda: 4.5) == 4  # 5 CPUs' worth on 5 cores
    assert (
        default_threads(range(2), smt, quota=lambda: 8.0) == 1
    )  # a quota above the CPUs: the CPUs
