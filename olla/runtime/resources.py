"""The machine's memory: RAM from psutil, GPUs from NVML, and the budgets olla may use of them.

A budget is bytes (`8GiB`) or a share of the device (`75%`); `OLLA_RAM_BUDGET` applies to RAM,
`OLLA_VRAM_BUDGET` to each GPU. NVML comes from `nvidia-ml-py`; without a driver (or without
a llama.cpp built for GPUs) the machine has no GPUs as far as olla is concerned.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Protocol

import psutil

from olla.units import format_size, parse_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """How much of a device olla may use: a fixed number of bytes, or a share of its total."""

    bytes: int | None = None
    share: float | None = None
    text: str = field(default="", compare=False)  # as the user wrote it, for messages

    @classmethod
    def parse(cls, value: str | int | Budget) -> Budget:
        """`8589934592`, `"8GiB"`, `"512MB"` or `"75%"`; ValueError says the accepted forms."""
        if isinstance(value, Budget):
            return value
        text = str(value).strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if not 0 < percent <= 100:
                raise ValueError(f'invalid budget "{value}": a percentage is from 1% to 100%')
            return cls(share=percent / 100, text=text)
        try:
            return cls(bytes=parse_size(value if isinstance(value, int) else text), text=text)
        except ValueError:
            raise ValueError(
                f'invalid budget "{value}": use bytes, a size ("8GiB", "512MB") or a share ("75%")'
            ) from None

    def of(self, total: int) -> int:
        """The budget in bytes on a device of `total` bytes (a fixed size is capped at it)."""
        if self.share is not None:
            return int(total * self.share)
        return min(self.bytes or 0, total)

    def describe(self, total: int) -> str:
        """`75% of 16 GB` or `8GiB`, for messages."""
        if self.share is not None:
            return f"{self.text or f'{self.share * 100:g}%'} of {format_size(total)}"
        return self.text or format_size(self.bytes or 0)

    def __str__(self) -> str:
        return self.text or (
            f"{self.share * 100:g}%" if self.share else format_size(self.bytes or 0)
        )


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
