"""Typed keys for the state the application holds (aiohttp's AppKey)."""

from __future__ import annotations

from aiohttp import web

from olla.config import Settings
from olla.registry.store import Registry
from olla.runtime.inprocess import InProcessGenerator

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
GENERATOR = web.AppKey("generator", InProcessGenerator)
