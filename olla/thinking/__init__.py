"""A thinking model's reasoning, told apart from its answer: pure text machinery, no I/O.

`parser` splits reasoning between tags (`<think>...</think>`) from the answer as it streams,
`harmony` does the same for gpt-oss's channels and its tool calls (and names tools as gpt-oss
reads them), and `detect` reads a model's templates to say whether it thinks, with which tags,
and whether it takes levels.
"""

from olla.thinking.detect import (
    go_template_tags,
    is_harmony,
    jinja_tags,
    prompt_opens,
    think_levels,
)
from olla.thinking.harmony import HarmonyCall, HarmonyParser, HarmonyPiece, harmony_names
from olla.thinking.parser import TagParser

__all__ = [
    "HarmonyCall",
    "HarmonyParser",
    "HarmonyPiece",
    "TagParser",
    "go_template_tags",
    "harmony_names",
    "is_harmony",
    "jinja_tags",
    "prompt_opens",
    "think_levels",
]
