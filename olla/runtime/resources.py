"""The machine's memory: RAM from psutil, GPUs from NVML, and the budgets olla may use of them.

A budget is bytes (`8GiB`) or a share of the device (`75%`); `OLLA_RAM_BUDGET` applies to RAM,
`OLLA_VRAM_BUDGET` to each GPU. NVML comes from `nvidia-ml-py`; without a driver (or without
a llama.cpp built for GPUs) the machine has no GPUs as far as olla is concerned.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from typing import Protocol

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML reports it, in bytes."""

    index: int
    name: str
    total: int
    free: int


@dataclass(frozen=True)
class Snapshot:
    """Memory right now: RAM total and available, and each usable GPU."""

    ram_total: int
    ram_available: int
    gpus: tuple[Gpu, ...] = ()


class Resources(Protocol):
    """Where the model manager reads the machine's memory (a fake one in tests)."""

    def snapshot(self) -> Snapshot: ...


class SystemResources:
    """The real machine: psutil for RAM; NVML for GPUs when llama.cpp can offload to them."""

    def __init__(self) -> None:
        self._gpu_offload: bool | None = None  # asked once, the first time NVML sees a GPU

    def snapshot(self) -> Snapshot:
        memory = psutil.virtual_memory()
        gpus = probe_gpus()
        if gpus and not self._offload_supported():
            gpus = ()
        return Snapshot(ram_total=memory.total, ram_available=memory.available, gpus=gpus)

    def _offload_supported(self) -> bool:
        if self._gpu_offload is None:
            self._gpu_offload = llama_cpp_supports_gpu()
            if not self._gpu_offload:
                log.warning(
                    "NVML sees a GPU but this llama-cpp-python was built without GPU "
                    "support; models load on the CPU"
                )
        return self._gpu_offload


def probe_gpus() -> tuple[Gpu, ...]:
    """Every NVIDIA GPU with its total and free memory; () without NVML or a driver."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return ()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            gpus.append(Gpu(index, name, int(info.total), int(info.free)))
        return tuple(gpus)
    except pynvml.NVMLError as exc:
        log.warning("NVML failed: %s; treating the machine as CPU-only", exc)
        return ()
    finally:
        pynvml.nvmlShutdown()


def llama_cpp_supports_gpu() -> bool:
    """Whether llama-cpp-python can offload layers, asked in a child so the daemon stays small."""
    code = "import sys, llama_cpp as c; sys.stdout.write(str(int(c.llama_supports_gpu_offload())))"
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.stdout.strip() == "1"
