"""A real PostgreSQL server for the tests, and fresh databases on it.

Where the server comes from, in order:

1. ``WARMCTL_TEST_POSTGRES_URL`` (a SQLAlchemy URL of a role allowed to create databases,
   e.g. ``postgresql+psycopg://warmctl:secret@db.local/postgres``): that server is used as it
   is; nothing is started or stopped.
2. Debian's binaries (``/usr/lib/postgresql/<major>/bin/initdb``, the ``postgresql`` package
   that ``scripts/install.sh --dev`` installs): one throwaway cluster per test session,
   ``initdb`` into a temporary directory and ``postgres`` on a free loopback port, stopped
   and deleted at the end. ``initdb`` and ``postgres`` refuse to run as root, so as root (CI
   runs as root) they run as the ``postgres`` user the package creates, via ``runuser``.
3. Neither: :func:`unavailable` says why, and the tests that need PostgreSQL fail under
   ``CI=true`` (a skip would hide that the store was never tested on it) and skip elsewhere.

Each test gets a database of its own, copied from a migrated template with ``CREATE DATABASE
... TEMPLATE``: a file copy on the server, a few tens of milliseconds, instead of migrating
again. Database names carry the process id and a random part, so sessions sharing one
server (``WARMCTL_TEST_POSTGRES_URL``) never meet.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ENV_URL = "WARMCTL_TEST_POSTGRES_URL"
#: the role the local cluster's superuser gets (trust authentication on loopback only)
LOCAL_ROLE = "warmctl"
#: the user the cluster runs as when the tests run as root
SERVICE_USER = "postgres"
#: a cluster that takes longer than this to start is broken, not slow (it starts in ~1 s)
START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory (Debian's layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


def unavailable() -> str | None:
    """Why no PostgreSQL can be had here (None: one can)."""
    if os.environ.get(ENV_URL):
        return None
    if find_bin_dir() is None:
        return (f"no PostgreSQL for the tests: set {ENV_URL} or install Debian's postgresql "
                "package (scripts/install.sh --dev does)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return (f"running as root, and there is no {SERVICE_USER!r} user to run "
                    "PostgreSQL as (initdb refuses root)")
        if shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as another user"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A server to create test databases on. ``admin_url``: a SQLAlchemy URL of a role that
    may create databases, on a maintenance database (``postgres``)."""

    admin_url: str
    #: what to stop at the end (None: a server we did not start)
    cluster: LocalCluster | None = None
    _prefix: str = field(default_factory=lambda: f"warmctl_{os.getpid()}_{secrets.token_hex(3)}")
    _count: int = 0

    def url(self, database: str) -> str:
        """The URL of ``database`` on this server (password included)."""
        return make_url(self.admin_url).set(database=database).render_as_string(
            hide_password=False)

    def new_name(self, what: str) -> str:
        self._count += 1
        return f"{self._prefix}_{what}_{self._count}"

    def execute(self, statement: str) -> None:
        # CREATE/DROP DATABASE cannot run inside a transaction block: autocommit
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create ``name`` (a copy of ``template`` when given); returns its URL. A template
        must have no open connection while it is copied."""
        self.execute(f'CREATE DATABASE "{name}"'
                     + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending connections a test left open (a thread stuck on a stalled
        store, an engine not disposed): they must not keep the database alive."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


@dataclass
class LocalCluster:
    """A cluster of our own: its data directory and the running postmaster."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    as_user: list[str]

    def stop(self) -> None:
        # "fast" shutdown: sessions are ended, nothing of this throwaway cluster is kept
        pg_ctl = self.directory.parent / "bin" / "pg_ctl"
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([*self.as_user, str(pg_ctl), "stop", "-D", str(self.directory),
                            "-m", "fast", "-w", "-t", "30"], capture_output=True, timeout=40,
                           check=False)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        shutil.rmtree(self.directory.parent, ignore_errors=True)


def start_local(bin_dir: Path) -> PostgresServer:
    """initdb into a fresh temporary directory and start ``postgres`` on a free loopback
    port; returns when it accepts connections."""
    as_user: list[str] = []
    # tempfile's directory, not pytest's tmp_path: pytest's is private to root (0700), and
    # as root the cluster runs as the postgres user, which must reach its data directory
    base = Path(tempfile.mkdtemp(prefix="warmctl-pg-"))
    directory = base / "data"
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", SERVICE_USER, "--"]
        service = pwd.getpwnam(SERVICE_USER)
        os.chown(base, service.pw_uid, service.pw_gid)
    # pg_ctl beside the data directory, so that stop() finds the binaries of this cluster
    (base / "bin").symlink_to(bin_dir)
    try:
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(directory), "-U", LOCAL_ROLE,
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True, timeout=START_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}"
                           ) from exc
    port = _free_port()
    # Durability off (fsync, synchronous_commit, full_page_writes): a test database is thrown
    # away, and flushing every commit would make the PostgreSQL runs disk-bound. No Unix
    # socket: loopback TCP only, which is what the control plane's URLs use.
    settings = {"listen_addresses": "127.0.0.1", "port": str(port),
                "unix_socket_directories": "", "fsync": "off", "synchronous_commit": "off",
                "full_page_writes": "off", "max_connections": "300",
                "shared_buffers": "64MB", "log_min_messages": "warning"}
    options = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
    log = open(base / "postgres.log", "wb")  # noqa: SIM115 (the server's whole life)
    process = subprocess.Popen([*as_user, str(bin_dir / "postgres"), "-D", str(directory),
                                *options], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    cluster = LocalCluster(directory, port, process, as_user)
    server = PostgresServer(f"postgresql+psycopg://{LOCAL_ROLE}@127.0.0.1:{port}/postgres",
                            cluster)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            server.execute("SELECT 1")
            return server
        except Exception as exc:  # not up yet, or it died: the log says which
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (base / "postgres.log").read_text(errors="replace")[-2000:]
                cluster.stop()  # deletes the log: read first
                raise RuntimeError(f"PostgreSQL did not start ({exc}): {tail}") from exc
            time.sleep(0.1)


def start() -> PostgresServer:
    """The tests' server: ``WARMCTL_TEST_POSTGRES_URL``'s, else a local cluster. Raises
    RuntimeError when there is none (see :func:`unavailable`)."""
    if url := os.environ.get(ENV_URL):
        return PostgresServer(url)
    reason = unavailable()
    bin_dir = find_bin_dir()
    if reason is not None or bin_dir is None:
        raise RuntimeError(reason or "no PostgreSQL binaries")
    return start_local(bin_dir)
