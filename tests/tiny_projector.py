"""A tiny vision projector GGUF for store tests: llama.cpp's mmproj metadata (SmolVLM-256M's
SigLIP sizes) and one small tensor; enough for olla to recognise it, not for libmtmd to load."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

# SmolVLM-256M's encoder: 512 px images in 16 px patches, 768 wide, 12 blocks; its projector
# (idefics3) maps 16 merged patches into SmolLM2-135M's 576-wide embeddings
IMAGE_SIZE, PATCH_SIZE, EMBEDDING, BLOCKS, FEED_FORWARD, HEADS, PROJECTION = (
    512,
    16,
    768,
    12,
    3072,
    12,
    576,
)


def write_projector(path: Path, general_type: bool = True, name: str = "Tiny SigLIP") -> Path:
    """An mmproj GGUF: `general.architecture` "clip", the `clip.vision.*` sizes, one tensor
    (`general.type` "mmproj" unless `general_type` is false, as older projector files have)."""
    w = gguf.GGUFWriter(path, "clip")
    if general_type:
        w.add_type("mmproj")
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type("idefics3")
    w.add_vision_image_size(IMAGE_SIZE)
    w.add_vision_patch_size(PATCH_SIZE)
    w.add_vision_embedding_length(EMBEDDING)
    w.add_vision_feed_forward_length(FEED_FORWARD)
    w.add_vision_block_count(BLOCKS)
    w.add_vision_head_count(HEADS)
    w.add_vision_projection_dim(PROJECTION)
    w.add_vision_projector_scale_factor(4)
    w.add_vision_image_mean([0.5, 0.5, 0.5])
    w.add_vision_image_std([0.5, 0.5, 0.5])
    w.add_tensor("v.patch_embd.weight", np.ones((4, 8), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
