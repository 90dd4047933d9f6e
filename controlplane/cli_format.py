"""What the CLI prints: tables that fit the terminal, and progress for long calls."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_SPINNER = "|/-\\"


def _fmt_bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def fit(text: str, width: int) -> str:
    """``text`` on one line within ``width`` characters (cut with ``...``)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:max(0, width - 3)] + "..."


def status_table(models: list[dict[str, Any]], width: int | None = None,
                 wide: bool = False) -> list[str]:
    """``warmctl status``'s model lines: the name column as wide as the longest name (up to
    40), and each reason cut to what is left of the terminal, unless ``wide``."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    name_w = min(40, max([len("MODEL"), *(len(m["name"]) for m in models)]))
    lines = [f"{'MODEL':<{name_w}} {'STATE':<10} {'PIN':<4} {'MEMORY':>9} {'LOAD':>7}  REASON"]
    prefix = name_w + 1 + 10 + 1 + 4 + 1 + 9 + 1 + 7 + 2
    for m in models:
        load = "-" if m["load_s"] is None else f"{m['load_s']:.2f}s"
        reason = " ".join((m["reason"] or "").split())
        if not wide:
            reason = fit(reason, max(20, width - prefix))
        lines.append(f"{fit(m['name'], name_w):<{name_w}} {m['state']:<10} "
                     f"{'yes' if m['pinned'] else '':<4} {_fmt_bytes(m['memory_bytes']):>9} "
                     f"{load:>7}  {reason}")
    return lines


@contextmanager
def progress(what: str, stream: TextIO | None = None, *, interval_s: float = 0.2,
             force: bool = False) -> Iterator[None]:
    """Show ``what`` with a spinner and the seconds elapsed while the block runs, on a
    terminal only (``force``: on any stream); the line is cleared at the end."""
    out = stream or sys.stderr
    if not (force or out.isatty()):
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        tick = 0
        while not done.wait(interval_s if tick else 0):
            out.write(f"\r{_SPINNER[tick % 4]} {what} {time.monotonic() - started:5.1f}s")
            out.flush()
            tick += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        out.write("\r\033[K")
        out.flush()
