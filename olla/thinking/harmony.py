"""TEMPORARY stand-in until the thinking-parsers branch lands (replaced by it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HarmonyCall:
    name: str
    arguments: str


@dataclass(frozen=True)
class HarmonyPiece:
    thinking: str = ""
    content: str = ""
    calls: tuple[HarmonyCall, ...] = ()


class HarmonyParser:
    def __init__(self, inside: bool = False) -> None:
        self._held = ""

    def feed(self, text: str) -> HarmonyPiece:
        self._held += text
        return HarmonyPiece()

    def finish(self) -> HarmonyPiece:
        held, self._held = self._held, ""
        return HarmonyPiece(content=held)
