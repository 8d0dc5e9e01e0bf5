"""The daemon: build the aiohttp application, listen, and shut down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket

from aiohttp import web

from olla import __version__
from olla.config import Settings
from olla.errors import ConfigError
from olla.registry.store import Registry
from olla.runtime.manager import ModelManager
from olla.server import (
    routes_anthropic,
    routes_responses,
    routes_ui_history,
    systemd,
    ui_page,
    ui_session_routes,
)
from olla.server.api_keys import KeyStore
from olla.server.auth import KEY_STORE, ORIGINS, auth_middleware, cors_middleware
from olla.server.gate import GATE, Gate
from olla.server.hosts import HOST_POLICY, HostPolicy, host_middleware
from olla.server.keys import MANAGER, PULLS, REGISTRY, SETTINGS
from olla.server.metrics import METRICS, Metrics, access_middleware
from olla.server.middleware import error_middleware
from olla.server.pulls import Pulls
from olla.server.routes_api import add_routes
from olla.server.ui_history_store import HistoryStore
from olla.server.ui_sessions import SESSIONS, SessionStore
from olla.server.user_limits import UserLimits

log = logging.getLogger(__name__)


def make_app(
    settings: Settings,
    registry: Registry | None = None,
    manager: ModelManager | None = None,
    inherited: socket.socket | None = None,
) -> web.Application:
    """Wire the routes to a registry and a model manager (real ones unless given); `inherited`
    is the socket systemd passed, if it serves on one."""
    # Outermost first: CORS headers go on every answer, errors included. The Host check is
    # inside the error middleware, so its 403 is rendered like every error (as OpenAI's under
    # /v1, with CORS headers a local page can read), and after CORS as in Ollama: a preflight
    # grants nothing, the request that follows is checked. It comes before the keys, so a
    # rebinding page gets the same 403 whether keys exist or not, and no key is tried for it.
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        middlewares=[
            access_middleware,
            cors_middleware,
            error_middleware,
            host_middleware,
            auth_middleware,
        ],
    )
    listen = inherited.getsockname() if inherited is not None else settings.host
    app[HOST_POLICY] = HostPolicy.for_listener(listen, settings.allowed_hosts)
    app[METRICS] = Metrics()
    app[KEY_STORE] = KeyStore(settings.keys_file)
    app[SESSIONS] = SessionStore()  # always: a stale cookie must be refused, not crash
    app[ORIGINS] = settings.origins
    app[SETTINGS] = settings
    app[REGISTRY] = registry or Registry(settings.models)
    app[MANAGER] = manager or ModelManager(settings)
    app[PULLS] = Pulls(app[REGISTRY], settings.registry)
    app[GATE] = Gate(
        settings,
        app[REGISTRY],
        app[MANAGER],
        UserLimits(settings.max_user_requests, settings.max_user_queue),
        app[METRICS],
    )
    app[routes_ui_history.HISTORY] = HistoryStore(settings.home / "ui.sqlite3")
    app.on_cleanup.append(_stop_runners)
    add_routes(app)
    routes_anthropic.add_routes(app.router)
    routes_responses.add_routes(app.router)
    if settings.ui:  # off: every /ui path is the router's 404
        ui_page.add_routes(app)
        ui_session_routes.add_routes(app)
        routes_ui_history.add_routes(app.router)
    return app


def _page_url(settings: Settings, inherited: socket.socket | None) -> str:
    """Where a browser on this machine opens the page (a socket can only be named)."""
    if inherited is not None:
        return f"/ui/ on the socket systemd passed ({inherited.getsockname()})"
    if settings.host.is_unix:
        return f"/ui/ on {settings.host} (a browser cannot reach a unix socket)"
    return settings.host.base_url + "/ui/"


async def _stop_runners(app: web.Application) -> None:
    await app[METRICS].close()  # its stats calls first: they talk to the runners
    await app[MANAGER].close()
    await app[PULLS].close()
    await asyncio.to_thread(app[routes_ui_history.HISTORY].close)


def _remove_stale_socket(path: str, label: str) -> None:
    """Unlink a socket file left by a dead daemon; refuse if a live one answers on it."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left over from a previous run
        return
    finally:
        probe.close()
    raise ConfigError(f"cannot listen on {label}: another process is serving on it")


async def _start_site(
    runner: web.AppRunner, settings: Settings, inherited: socket.socket | None
) -> web.BaseSite:
    host = settings.host
    site: web.BaseSite
    if inherited is not None:  # socket activation: systemd listens, olla serves
        site = web.SockSite(runner, inherited)
        await site.start()
        log.info("serving on the socket systemd passed: %s", inherited.getsockname())
        return site
    if host.is_unix:
        assert host.socket_path is not None
        _remove_stale_socket(host.socket_path, str(host))
        site = web.UnixSite(runner, host.socket_path)
    else:
        site = web.TCPSite(runner, host.host, host.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {host}: address already in use "
                "(is another olla running? pick another address with OLLA_HOST)"
            ) from None
        raise ConfigError(f"cannot listen on {host}: {exc.strerror or exc}") from None
    if host.is_unix:
        os.chmod(host.socket_path, 0o660)  # type: ignore[arg-type]
    return site


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run the daemon until SIGINT or SIGTERM; raises ConfigError if it cannot listen."""
    settings.models.mkdir(parents=True, exist_ok=True)
    inherited = systemd.inherited_socket(os.environ)  # before make_app: the Host check needs it
    app = make_app(settings, inherited=inherited)
    removed = await asyncio.to_thread(app[REGISTRY].blobs.remove_stale_temp)
    if removed:
        log.info("removed %d stale temporary file(s) from the blob store", removed)
    # handler_cancellation: a client that goes away cancels its handler, and so its sequence
    runner = web.AppRunner(
        app, access_log=log if settings.debug else None, handler_cancellation=True
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listening = False
    try:
        site = await _start_site(runner, settings, inherited)
        listening = not isinstance(site, web.SockSite)  # an inherited socket is systemd's
        log.info(
            "olla %s listening on %s",
            __version__,
            settings.host,
            extra={"settings": settings.describe()},
        )
        if settings.ui:
            log.info("web page at %s", _page_url(settings, inherited))
        if not settings.host.is_loopback and not app[KEY_STORE].keys():
            log.warning(
                "listening on %s without API keys: anyone who can reach this address can use "
                "and change this olla; add a key with `olla keys add NAME`",
                settings.host,
            )
        if ready is not None:
            ready.set()
        systemd.notify(
            f"READY=1\nSTATUS=serving on {settings.host}\nMAINPID={os.getpid()}", os.environ
        )
        await stop.wait()
        log.info("shutting down")
        systemd.notify("STOPPING=1", os.environ)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        if listening and settings.host.socket_path:
            try:
                os.unlink(settings.host.socket_path)
            except FileNotFoundError:
                pass
