"""Typed keys for the state the application holds (aiohttp's AppKey)."""

from __future__ import annotations

from aiohttp import web

from olla.config import Settings
from olla.registry.store import Registry
from olla.runtime.manager import ModelManager
from olla.server.pulls import Pulls

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
MANAGER = web.AppKey("manager", ModelManager)
PULLS = web.AppKey("pulls", Pulls)
