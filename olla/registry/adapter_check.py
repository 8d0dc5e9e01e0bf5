"""Whether a LoRA adapter fits its base model: checked at create, as llama.cpp checks at load.

llama.cpp (src/llama-adapter.cpp) refuses an adapter whose general.type is not "adapter", whose
adapter.type is not "lora", whose architecture is not the model's, or whose tensors do not pair
up with the model's weights: `<weight>.lora_a` of GGML shape [n_in, rank] and `<weight>.lora_b`
of [rank, n_out] for a weight of [n_in, n_out] (the token embeddings' pair the other way round),
`*_norm.weight` ignored. Refused here first, such an adapter is a 400 that says why, rather than
a model that fails to load on its first request. Only metadata and tensor infos are read.
"""

from __future__ import annotations

from collections.abc import Mapping

from olla.errors import InvalidRequest
from olla.registry.gguf_info import GGUFInfo

_A, _B = ".lora_a", ".lora_b"
_HOW = (
    "ADAPTER takes a LoRA GGUF made for the base model, e.g. by llama.cpp's convert_lora_to_gguf.py"
)

Shapes = Mapping[str, tuple[int, ...]]


def check_adapter(adapter: GGUFInfo, base: GGUFInfo, name: str) -> None:
    """InvalidRequest naming why `adapter` (called `name` in messages) cannot apply to `base`."""
    meta = adapter.metadata
    general_type = meta.get("general.type")
    if general_type != "adapter":
        got = f"'{general_type}'" if isinstance(general_type, str) else "missing"
        raise InvalidRequest(
            f"{name} is not an adapter: its general.type is {got}, not 'adapter'; {_HOW}"
        )
    adapter_type = meta.get("adapter.type")
    if adapter_type != "lora":
        got = f"'{adapter_type}'" if isinstance(adapter_type, str) else "missing"
        raise InvalidRequest(
            f"{name} is not a LoRA adapter: its adapter.type is {got}, not 'lora'; {_HOW}"
        )
    if adapter.architecture != base.architecture:
        raise InvalidRequest(
            f"{name} is an adapter for the {adapter.architecture} architecture, and the base "
            f"model is {base.architecture}; {_HOW}"
        )
    for weight, (a, b) in _pairs(adapter.tensor_shapes, name).items():
        target = base.tensor_shapes.get(weight)
        if target is None:
            raise InvalidRequest(
                f"{name} changes {weight}, which the base model does not have; {_HOW}"
            )
        _check_shapes(name, weight, target, a, b)


def _pairs(shapes: Shapes, name: str) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each adapted weight's (lora_a, lora_b) shapes; InvalidRequest for a stray tensor."""
    halves: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor, shape in shapes.items():
        if tensor.endswith(_A) or tensor.endswith(_B):
            halves.setdefault(tensor[: -len(_A)], {})[tensor[-len(_A) :]] = shape
        elif not tensor.endswith("_norm.weight"):  # llama.cpp skips norms, refuses the rest
            raise InvalidRequest(
                f"{name} has a tensor {tensor} that is not half of a LoRA pair "
                f"(names end in {_A} or {_B})"
            )
    pairs = {}
    for weight, half in sorted(halves.items()):
        if _A not in half or _B not in half:
            missing = _A if _A not in half else _B
            raise InvalidRequest(f"{name} has no {weight}{missing} to pair with its other half")
        pairs[weight] = (half[_A], half[_B])
    return pairs


def _check_shapes(
    name: str, weight: str, target: tuple[int, ...], a: tuple[int, ...], b: tuple[int, ...]
) -> None:
    """The pair's shapes against the base weight's, all in GGML order (ne[0] first)."""
    if len(target) != 2 or len(a) != 2 or len(b) != 2:
        raise InvalidRequest(
            f"{name}: {weight} and its LoRA pair must be matrices (shapes {list(target)}, "
            f"{list(a)}, {list(b)})"
        )
    if weight.endswith("token_embd.weight"):  # llama.cpp's embedding pair is flipped
        fits, rank_fits = (b[1], a[1]) == target, a[0] == b[0]
    else:
        fits, rank_fits = (a[0], b[1]) == target, a[1] == b[0]
    if not fits:
        raise InvalidRequest(
            f"{name} does not fit the base model: {weight} is {list(target)} there, and the "
            f"adapter's pair is lora_a {list(a)}, lora_b {list(b)} (GGML order): is it made for "
            "another model of this architecture?"
        )
    if not rank_fits:
        raise InvalidRequest(
            f"{name}: the ranks of {weight}'s lora_a {list(a)} and lora_b {list(b)} differ "
            "(an adapter from llama.cpp's old finetune example? convert it again)"
        )
