"""Structured outputs on llama.cpp: `format` ("json" or a JSON schema) → GBNF → its grammar sampler.

The schema is compiled by llama-cpp-python's port of llama.cpp's `json_schema_to_grammar` (with
olla's additions, `olla.backends.json_schema`); the
grammar runs in llama.cpp's own sampler, which olla uses only to check and mask candidates (the
draw itself stays olla's vectorised sampler).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

from olla.backends.json_schema import schema_to_gbnf
from olla.errors import InvalidRequest

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data


def grammar_for(fmt: Any) -> str:
    """The GBNF grammar for Ollama's `format`: "json", or a JSON schema (a JSON object)."""
    from llama_cpp.llama_grammar import JSON_GBNF

    if fmt == "json":
        return JSON_GBNF
    if not isinstance(fmt, dict):
        raise InvalidRequest('field "format" must be "json" or a JSON schema (an object)')
    try:
        return schema_to_gbnf(fmt)
    except InvalidRequest:
        raise
    except Exception as exc:  # the converter raises bare exceptions of several kinds
        message = f'field "format": olla cannot follow this JSON schema ({exc})'
        raise InvalidRequest(message) from None


class GrammarConstraint:
    """One sequence's grammar state in llama.cpp's grammar sampler."""

    def __init__(self, lc: Any, vocab: Any, vocab_size: int, grammar: str) -> None:
        self._lc = lc
        self._sampler = lc.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not self._sampler:
            raise InvalidRequest('field "format": llama.cpp could not parse the grammar it gives')
        self._all = np.zeros(vocab_size, dtype=_TOKEN_DATA)
        self._all["id"] = np.arange(vocab_size, dtype=np.int32)
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self._all_view = self._candidates(self._all)
        self._one_view = self._candidates(self._one)

    def _candidates(self, data: npt.NDArray[Any]) -> Any:
        pointer = ctypes.cast(data.ctypes.data, ctypes.POINTER(self._lc.llama_token_data))
        return self._lc.llama_token_data_array(
            data=pointer, size=len(data), selected=-1, sorted=False
        )

    def allows(self, token: int) -> bool:
        self._one[0] = (token, 0.0, 0.0)
        self._one_view.size = 1
        self._lc.llama_sampler_apply(self._sampler, ctypes.byref(self._one_view))
        return bool(np.isfinite(self._one["logit"][0]))

    def mask(self, logits: npt.NDArray[np.float32]) -> None:
        self._all["logit"] = logits
        self._all["id"] = np.arange(len(self._all), dtype=np.int32)  # apply may not reorder, but
        self._all_view.size = len(self._all)  # a sampler is free to: never trust the last call
        self._lc.llama_sampler_apply(self._sampler, ctypes.byref(self._all_view))
        logits[self._all["id"]] = self._all["logit"]

    def accept(self, token: int) -> None:
        self._lc.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler:
            self._lc.llama_sampler_free(self._sampler)
            self._sampler = None
