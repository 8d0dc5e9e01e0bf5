"""num_ctx when nobody sets it (no request option, Modelfile parameter or OLLA_CONTEXT_LENGTH).

As Ollama sets it (server/routes.go, server/sched.go): a tier by the machine's total VRAM,
262144 tokens from 47 GiB, 32768 from 23 GiB, else 4096 (the thresholds sit just under 48 and
24 GiB, which such cards report a little less than); never past the model's trained context;
and when that does not fit, the next tier down (256k, 32k, 4k). Ollama steps down once a load
has run out of memory; olla decides before the load, on its estimate: the largest candidate
that fits with every other model unloaded and puts no fewer layers on the GPU than the
smallest would (a longer default context is not worth a model spilling onto the CPU).
A context that someone asked for is never stepped down: it fits or it is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from olla.runtime.estimate import DirShape, Shape
from olla.runtime.placement import Placement
from olla.runtime.resources import Gpu
from olla.units import format_size

GiB = 2**30
TIERS = (262144, 32768, 4096)  # largest first; the last is a machine without (enough) GPUs
_LEAST_VRAM = {262144: 47 * GiB, 32768: 23 * GiB, 4096: 0}


def vram_tier(gpus: Sequence[Gpu]) -> int:
    """The default context for a machine with `gpus`: a tier by their total memory."""
    total = sum(gpu.total for gpu in gpus)
    return next(tier for tier in TIERS if total >= _LEAST_VRAM[tier])


def trained_context(shape: Shape) -> int | None:
    """The context the model was trained for (GGUF `<arch>.context_length`, config.json's
    `max_position_embeddings`); None when its file does not say."""
    if isinstance(shape, DirShape):
        return shape.info.context_length or None
    return shape.context_length or None


def candidates(tier: int, trained: int | None) -> tuple[int, ...]:
    """The contexts to try, largest first: `tier` capped at the trained context, then each
    lower tier (Ollama's nextLowerAutoNumCtx)."""
    out = [min(tier, trained) if trained else tier]
    out.extend(t for t in TIERS if t < out[0])
    return tuple(out)


@dataclass(frozen=True)
class AutoContext:
    """How an automatic num_ctx was chosen: what the log of the load says."""

    num_ctx: int
    tier: int
    vram: int  # the GPUs' total memory the tier came from
    trained: int | None
    too_big: tuple[int, ...] = ()  # larger candidates that did not fit

    def describe(self) -> str:
        """One line: the value, and why."""
        why = [f"tier {self.tier} for {format_size(self.vram)} of VRAM"]
        if self.trained is not None and self.trained < self.tier:
            why.append(f"the model's trained context is {self.trained}")
        if self.too_big:
            tried = ", ".join(str(n) for n in self.too_big)
            why.append(f"stepped down: {tried} would not fit (or not on the GPU)")
        return f"num_ctx {self.num_ctx} chosen by olla ({'; '.join(why)})"


def choose(
    gpus: Sequence[Gpu],
    shape: Shape,
    place: Callable[[int], Placement],
    fits_alone: Callable[[Placement], bool],
) -> tuple[AutoContext, Placement]:
    """The automatic num_ctx for a model of `shape` and its placement (`place(num_ctx)`).

    The largest candidate that `fits_alone` with no fewer GPU layers than the smallest gets;
    else the smallest, whose placement the caller then refuses with what it needs.
    """
    tier, trained = vram_tier(gpus), trained_context(shape)
    tries = candidates(tier, trained)
    smallest = place(tries[-1])
    vram = sum(gpu.total for gpu in gpus)
    for index, num_ctx in enumerate(tries[:-1]):
        placement = place(num_ctx)
        if fits_alone(placement) and placement.gpu_layers >= smallest.gpu_layers:
            return AutoContext(num_ctx, tier, vram, trained, tries[:index]), placement
    return AutoContext(tries[-1], tier, vram, trained, tries[:-1]), smallest
