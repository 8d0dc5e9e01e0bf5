"""Prompts: a fixed list, the same for every server, and the long texts of the two scenarios,
sized with the model's own tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchkit.options import Options

TOPICS = (
    "lighthouses",
    "the water cycle",
    "baking sourdough bread",
    "railway signalling",
    "honey bees",
    "glaciers",
    "the printing press",
    "volcanoes",
    "chess openings",
    "the immune system",
    "sailing ships",
    "early radio",
    "coral reefs",
    "mechanical clocks",
    "suspension bridges",
    "compilers",
)


FRAMES = (
    "Write a detailed essay about {t}. Begin with its history, then explain how it works "
    "today, and finish with what may change over the next fifty years.\n\n",
    "Here is a long and friendly explanation of {t} for a curious twelve-year-old, with many "
    "examples from everyday life:\n\n",
    "Lecture notes, week three: {t}. These notes cover the main ideas, the common mistakes "
    "students make, and a worked example.\n\n1.",
    "The following is a story about a young engineer who became obsessed with {t}.\n\n"
    "Chapter 1\n\n",
)


def load_prompts() -> list[str]:
    """64 distinct prompts: every frame for every topic."""
    return [frame.format(t=topic) for topic in TOPICS for frame in FRAMES]


class Tokenizer:
    """The model's own tokenizer (vocabulary only), to size the long prompts in real tokens."""

    def __init__(self, model: Path) -> None:
        import llama_cpp

        self._llama = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)

    def count(self, text: str) -> int:
        """Tokens in `text`, BOS included, as a server counts a prompt."""
        return len(self._llama.tokenize(text.encode(), add_bos=True, special=False))


def filler_text(tokenizer: Tokenizer, header: str, num_tokens: int) -> str:
    """A deterministic handbook of numbered rules, `header` first, of at least `num_tokens`."""
    parts = [header]
    i = 0
    while True:
        topic = TOPICS[i % len(TOPICS)]
        parts.append(
            f"Rule {i + 1}. When a visitor asks about {topic}, answer plainly, cite the section of "
            f"the handbook that applies (section {i % 7 + 1}.{i % 5 + 1}), and never guess a "
            f"date or a number you cannot check."
        )
        i += 1
        if tokenizer.count("\n".join(parts)) >= num_tokens:
            return "\n".join(parts)


@dataclass
class ScenarioTexts:
    """The long texts of the two extra scenarios, sized with the model's tokenizer."""

    handbook: str
    handbook_tokens: int
    long_prompt: str
    long_prompt_tokens: int


def make_scenario_texts(opts: Options) -> ScenarioTexts:
    """The ~1,500-token handbook and the ~2,000-token long prompt, sized in real tokens."""
    tokenizer = Tokenizer(opts.model)
    handbook = filler_text(tokenizer, "You are the help desk of the Harbour Museum.", 1500)
    long_prompt = filler_text(tokenizer, "Summarise the museum handbook below.", 2000)
    return ScenarioTexts(
        handbook, tokenizer.count(handbook), long_prompt, tokenizer.count(long_prompt)
    )
