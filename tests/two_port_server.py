"""An aiohttp app served on two loopback ports from a thread of its own: the fake services the
tests pull from (a Hugging Face hub, an Ollama registry) answer on one and send downloads to the
other, as the real ones redirect to a CDN on another origin."""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType
from typing import Self

from aiohttp import web


class TwoPortServer:
    """Start with `start` (or `with`); `url` is the service, `cdn_url` the second port. A
    subclass answers every request of both ports in `_handle`."""

    name = "fake-server"  # the thread's name, and the start errors'

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._cdn_port = 0

    @property
    def url(self) -> str:
        """The service's base URL: ``http://127.0.0.1:PORT``."""
        if not self._port:
            raise RuntimeError(f"{self.name} is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def cdn_url(self) -> str:
        """Where downloads are redirected to: the same server on another port (another origin)."""
        if not self._cdn_port:
            raise RuntimeError(f"{self.name} is not started")
        return f"http://127.0.0.1:{self._cdn_port}"

    def start(self) -> Self:
        """Start serving in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._start_server(), loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving (downloads in flight are cut) and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._runner is not None:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
            self._loop = self._thread = self._runner = None
            self._port = self._cdn_port = 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _on_cdn(self, request: web.Request) -> bool:
        """Whether `request` came to the second port."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return bool(sockname and sockname[1] == self._cdn_port)

    async def _start_server(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        ports = []
        for _ in range(2):  # the service, and its "CDN"
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
            await web.SockSite(runner, sock).start()
        self._port, self._cdn_port = ports

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError
