"""Typed keys for the state the application holds (aiohttp's AppKey)."""

from __future__ import annotations

from aiohttp import web

from olla.config import Settings
from olla.registry.store import Registry
from olla.runtime.manager import ModelManager
from olla.runtime.prompting import ChatFormats
from olla.server.pulls import Pulls
from olla.server.user_limits import UserLimits

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
MANAGER = web.AppKey("manager", ModelManager)
CHAT_FORMATS = web.AppKey("chat_formats", ChatFormats)
PULLS = web.AppKey("pulls", Pulls)
USER_LIMITS = web.AppKey("user_limits", UserLimits)
