"""The text model of the vision bench: SmolLM2-135M with the tokens SmolVLM's projector needs.

libmtmd's idefics3 recipe (SmolVLM) writes `<fake_token_around_image>` and `<global-img>` around
each image by vocabulary lookup, and `<row_R_col_C>` in the text between tiles. SmolLM2's own
vocabulary lacks them: libmtmd then puts LLAMA_TOKEN_NULL in their place, which llama-server
rejects ("Invalid token", a 400). SmolVLM-256M's text model is SmolLM2-135M with such tokens
added, so the bench does the same to the GGUF it is given: the tokens appended as control
tokens, the embedding matrix grown by as many rows, each a copy of an existing row (the output
matrix too, where it is not tied). Every other key and tensor is copied byte for byte; both
servers get this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, TokenType

# SmolVLM's tile grid goes up to 6 x 6 at its default 2048-pixel longest edge
GRID = 6


def image_tokens() -> list[str]:
    """The tokens libmtmd's idefics3 template looks up or writes, in SmolVLM's order."""
    rows = [f"<row_{r}_col_{c}>" for r in range(1, GRID + 1) for c in range(1, GRID + 1)]
    return ["<global-img>", *rows, "<fake_token_around_image>", "<image>"]


def missing_tokens(reader: GGUFReader) -> list[str]:
    """The image tokens the model's vocabulary lacks."""
    have = set(reader.fields["tokenizer.ggml.tokens"].contents())
    return [t for t in image_tokens() if t not in have]


def add_image_tokens(src: Path, dst: Path) -> int:
    """Write `src` to `dst` with the missing image tokens added; returns how many were added."""
    reader = GGUFReader(src)
    extra = missing_tokens(reader)
    arch = str(reader.fields["general.architecture"].contents())
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    new_values = {
        "tokenizer.ggml.tokens": [*tokens, *extra],
        "tokenizer.ggml.token_type": [*types, *[int(TokenType.CONTROL)] * len(extra)],
        f"{arch}.vocab_size": len(tokens) + len(extra),
    }
    writer = GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer adds these itself
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        value = new_values.get(field.name, field.contents())
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    datas = []
    for tensor in reader.tensors:
        data = np.asarray(tensor.data)
        if tensor.name in ("token_embd.weight", "output.weight") and extra:
            # rows are whole (quantized) embedding vectors: copy the first ones for the new ids
            data = np.concatenate([data, data[: len(extra)]])
        datas.append(data)
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in datas:
        writer.write_tensor_data(data)
    writer.close()
    return len(extra)
