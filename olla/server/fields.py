"""The fields each route's body takes: any other is ignored and named in the log line.

Ollama's lists include what its clients send that olla accepts and ignores or checks (`think`,
`truncate`, `shift`); OpenAI's include the fields its client may send that change nothing here
(`user`, `store`, `metadata`, ...).
"""

from __future__ import annotations

_SAMPLING = (
    "model",
    "stream",
    "stop",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "user",
    "stream_options",
)

GENERATE = frozenset(
    {
        "model",
        "name",
        "prompt",
        "suffix",
        "system",
        "template",
        "context",
        "stream",
        "raw",
        "format",
        "keep_alive",
        "images",
        "options",
        "think",
        "logprobs",
        "top_logprobs",
        "truncate",
        "shift",
    }
)
CHAT = frozenset(
    {
        "model",
        "name",
        "messages",
        "tools",
        "format",
        "options",
        "stream",
        "keep_alive",
        "think",
        "logprobs",
        "top_logprobs",
        "truncate",
        "shift",
    }
)
EMBED = frozenset({"model", "name", "input", "truncate", "dimensions", "options", "keep_alive"})
EMBEDDINGS = frozenset({"model", "name", "prompt", "options", "keep_alive"})
PULL = frozenset({"model", "name", "insecure", "stream", "username", "password"})
SHOW = frozenset({"model", "name", "verbose", "system", "template", "options"})
COPY = frozenset({"source", "destination"})
DELETE = frozenset({"model", "name"})
CREATE = frozenset(
    {
        "model",
        "name",
        "from",
        "files",
        "adapters",
        "template",
        "system",
        "parameters",
        "messages",
        "license",
        "quantize",
        "stream",
        "modelfile",
        "path",
    }
)

OPENAI_CHAT = frozenset(
    {
        *_SAMPLING,
        "messages",
        "max_completion_tokens",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "store",
        "metadata",
        "service_tier",
        "reasoning_effort",
        "reasoning",
        "prompt_cache_key",
        "safety_identifier",
    }
)
OPENAI_COMPLETIONS = frozenset({*_SAMPLING, "prompt", "echo", "suffix", "best_of"})
OPENAI_EMBEDDINGS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})

ANTHROPIC_COUNT_TOKENS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config"}
)
ANTHROPIC_MESSAGES = frozenset(
    {
        *ANTHROPIC_COUNT_TOKENS,
        "max_tokens",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "stream",
        "service_tier",
    }
)
OPENAI_RESPONSES = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "stream",
        "metadata",
        "user",
        "truncation",
        # accepted and ignored (olla keeps nothing, Ollama ignores them too)
        "store",
        "include",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        # refused with a 400 that says olla keeps no state
        "previous_response_id",
        "conversation",
        "background",
    }
)
