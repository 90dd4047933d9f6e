"""One step of a stop, bounded: a stop never hangs on one part, and the log names the part
that did not finish (the composition root and the front doors stop through it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

log = logging.getLogger(__name__)


async def bounded(what: str, step: Awaitable[object], limit_s: float) -> None:
    """Await ``step`` for at most ``limit_s`` seconds; a timeout or an error is logged with
    ``what`` and swallowed (the stop goes on with the next part)."""
    try:
        await asyncio.wait_for(step, limit_s)
    except TimeoutError:
        log.warning("stopping: %s did not finish within %gs; going on", what, limit_s)
    except Exception:
        log.exception("stopping: %s failed; going on", what)
