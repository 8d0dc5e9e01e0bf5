"""Serve the web chat page: `GET /ui/` is `olla/ui/index.html`, `GET /ui/static/<file>` a file
under `olla/ui/static/`, each with a strict Content-Security-Policy.

The CSP allows scripts, styles and fonts from the daemon only (no inline code, no other host),
connections back to the daemon only, images from it or from `data:`/`blob:` URLs (attachments
the page previews), and no framing: what a model writes, even if it slipped past the page's
sanitiser, cannot load or run anything. No directory is listed and no path leaves `static/`.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

from olla.errors import NotFound

UI_ROOT = web.AppKey("ui_root", Path)
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "ui"  # the package's olla/ui/

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # revalidate each load (ETag/Last-Modified make it cheap): files change with olla's version
    "Cache-Control": "no-cache",
}
# With nosniff a browser runs a script only if its type says so: never leave these to the
# platform's mime table (some map .js to text/plain or lack .mjs)
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".map": "application/json",
    ".woff2": "font/woff2",
    ".md": "text/plain",
    ".txt": "text/plain",
}


def content_type(path: Path) -> str:
    """The Content-Type a static file is served with."""
    known = _TYPES.get(path.suffix.lower())
    if known:
        return f"{known}; charset=utf-8" if known.startswith("text/") else known
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def static_path(root: Path, relative: str) -> Path | None:
    """The file `relative` names under `root/static`, or None when it is no file there (a
    directory, a path out of it through `..` or a link, a name that is not there)."""
    base = (root / "static").resolve()
    if not relative or "\x00" in relative:
        return None
    path = (base / relative).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


def _file(path: Path) -> web.FileResponse:
    headers = {**PAGE_HEADERS, "Content-Type": content_type(path)}
    return web.FileResponse(path, headers=headers)


async def index(request: web.Request) -> web.StreamResponse:
    """GET /ui/: the page."""
    path = request.app[UI_ROOT] / "index.html"
    if not path.is_file():
        raise NotFound(f"the web page is missing from this install ({path}); reinstall olla")
    return _file(path)


async def to_index(request: web.Request) -> web.StreamResponse:
    """GET /ui: the page lives at /ui/ (its relative links need the slash)."""
    raise web.HTTPFound("/ui/")


async def static(request: web.Request) -> web.StreamResponse:
    """GET /ui/static/<file>."""
    path = static_path(request.app[UI_ROOT], request.match_info["path"])
    if path is None:
        raise NotFound(f"no file {request.match_info['path']!r} in the web page's static files")
    return _file(path)


def add_routes(app: web.Application, root: Path = DEFAULT_ROOT) -> None:
    """Serve the page from `root` (the package's olla/ui/ unless given)."""
    app[UI_ROOT] = root
    app.router.add_get("/ui", to_index)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/static/{path:.+}", static)
