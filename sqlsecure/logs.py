"""Where a long-running service (`sqlsecure serve`, `sqlsecure party serve`) writes its log."""

from __future__ import annotations

import logging

from sqlsecure.errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to(log_file: str | None = None) -> logging.Handler:
    """Send the server's log (logins, queries, refusals, errors; INFO and up) to stderr or `log_file`.

    Attached to the `sqlsecure` logger, so the engine's own errors are included; returns the handler
    (to remove it when the server stops)."""
    try:
        handler = logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler()
    except OSError as exc:
        raise ConfigError(f"--log-file {log_file}: cannot append to it: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("sqlsecure")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler
