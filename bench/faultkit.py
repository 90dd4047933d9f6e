"""Real storage faults for the fault bench and tests: a data directory on a filesystem of its
own that can be filled, made read-only and given back; and a steady client load.

Mounting needs root. The disk-full fault is a small tmpfs filled by a file. The read-only
fault cannot be ``mount -o remount,ro``: Linux refuses it (EBUSY) while any file on the
filesystem is open for writing, and SQLite keeps its database and WAL open read-write for
its whole life. It is a small ext4 image instead (a loop device) whose data directory and
database files are made immutable (``chattr +i``): ext4 refuses every write to them, through
descriptors already open too (EPERM: SQLite says "disk I/O error"), and ``chattr -i`` gives
them back. The ``-shm`` index is left alone: SQLite maps it, and a write fault on an
immutable mapped file is a SIGBUS.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def cannot_mount() -> str | None:
    """Why this process cannot mount a filesystem (None: it can)."""
    if os.geteuid() != 0:
        return "mounting a filesystem for a real disk fault needs root"
    missing = [t for t in ("mount", "umount", "losetup", "mkfs.ext4", "chattr")
               if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` at ``path`` for the duration."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@contextlib.contextmanager
def ext4(path: Path, size_mb: int) -> Iterator[Path]:
    """A fresh ext4 (no journal: nothing else writes) on a loop device, mounted at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="warmctl-ext4-", suffix=".img")
    os.close(fd)
    image = Path(name)
    try:
        os.truncate(image, size_mb << 20)
        _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image))
        _run("mount", "-o", "loop", str(image), str(path))
        try:
            yield path
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                writable(path)
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
    finally:
        image.unlink(missing_ok=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` with one file until it is full; returns the file
    (remove it to end the fault)."""
    filler = directory / ".filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as fh:
        for size in (len(chunk), 4096, 1):
            while True:
                try:
                    fh.write(chunk[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


def _protected(directory: Path) -> list[str]:
    return [str(p) for p in (directory, *directory.glob("*.db"), *directory.glob("*.db-wal"))
            if p.exists()]


def read_only(directory: Path) -> None:
    """Make ``directory`` and its SQLite files refuse every write (see the module's doc)."""
    _run("chattr", "+i", *_protected(directory))


def writable(directory: Path) -> None:
    _run("chattr", "-i", *_protected(directory))


@dataclass
class SteadyLoad:
    """``threads`` clients, each sending ``send()`` at ``rate_per_s`` / ``threads`` a second
    through the gateway; counts what succeeded and what failed (with the first errors).
    With the control plane on the caller's event loop, call ``stop`` off it
    (``asyncio.to_thread``): a client thread may wait for the loop to answer."""

    send: Callable[[Any], object]
    connect: Callable[[], Any]
    rate_per_s: float
    threads: int = 2
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> SteadyLoad:
        self._stop.clear()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self) -> None:
        client = self.connect()
        period = self.threads / self.rate_per_s
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    self.send(client)
                except Exception as exc:  # counted: the figure the bench reports
                    with self._lock:
                        self.failed += 1
                        if len(self.errors) < 5:
                            self.errors.append(str(exc)[:300])
                else:
                    with self._lock:
                        self.ok += 1
                next_at += period
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        self._workers.clear()
