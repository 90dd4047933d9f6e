"""warmctl's own log: level and format from the settings (``[log]``), JSON as an option.

JSON lines carry ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and, for an
exception, ``exception`` (the formatted traceback): one object per line for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: chatty at INFO: one line per admin call (httpx), two per planning pass (apscheduler)
#: libraries whose INFO lines say nothing an operator acts on (alembic's: a plugin set-up and
#: one line per migration at every start; the store logs its own one line, ``migrate``)
QUIET = ("httpx", "apscheduler", "alembic")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", fmt: str = "text",
                      stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers: ``level`` (debug, info, warning, error) and
    ``fmt`` (text or json). Safe to call again (``serve`` does, once settings are read)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
