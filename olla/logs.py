"""Logging for the daemon: one line per record on stderr, extras appended as key=value."""

from __future__ import annotations

import json
import logging
import sys

# Attributes every LogRecord has; anything else came from `extra=` and is worth printing.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`, so logs can be grepped by field."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in extras.items())
        return line


def setup_logging(debug: bool) -> None:
    """Send olla's logs to stderr at INFO (or DEBUG when OLLA_DEBUG is set)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
