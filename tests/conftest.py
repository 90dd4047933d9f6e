from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.store.database import Database
from tests.support import postgres as pg

ROOT = Path(__file__).resolve().parents[1]

# every test, the integration ones too, fails on a lifecycle transition missing from the
# table (lifecycle/states.py); in production one is logged and applied
os.environ.setdefault("WARMCTL_STRICT_TRANSITIONS", "1")
# the gateway inside the control process whatever the machine's cores (the default is a
# share of them): tests that want worker processes say so (tests/integration/
# test_gateway_workers.py); subprocesses started by tests inherit this
os.environ.setdefault("WARMCTL_GATEWAY__WORKERS", "1")


#: the store's dialects; the tests below run on each (ids ``[sqlite]``, ``[postgresql]``)
DIALECTS = ("sqlite", "postgresql")
#: the tests of what the store does (its modules, and the store-like modules of traffic,
#: warm-up and the scheduler): every test there that takes ``database`` (or
#: ``database_url``) runs on SQLite and on PostgreSQL. The other tests use a store as a
#: fixture only, and stay on SQLite (twice the runs would prove nothing more).
ON_BOTH_STORES = ("unit/test_store.py", "unit/store/", "unit/traffic/", "unit/warmup/",
                  "unit/warmup_plumbing/test_configs.py", "unit/scheduler/test_jobstore.py",
                  "unit/lifecycle/test_store_faults.py")
#: ``WARMCTL_TEST_DB=postgresql``: the integration tests' control planes (and every other
#: ``database``) use PostgreSQL; the default is SQLite
TEST_DB_ENV = "WARMCTL_TEST_DB"


def default_dialect() -> str:
    dialect = os.environ.get(TEST_DB_ENV, "sqlite")
    if dialect not in DIALECTS:
        raise pytest.UsageError(f"{TEST_DB_ENV} is one of {', '.join(DIALECTS)}: {dialect!r}")
    return dialect


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    path = metafunc.definition.path.as_posix()
    if "store_dialect" in metafunc.fixturenames and any(
            f"/tests/{part}" in path for part in ON_BOTH_STORES):
        metafunc.parametrize("store_dialect", DIALECTS, indirect=True)


@pytest.fixture
def store_dialect(request: pytest.FixtureRequest) -> str:
    """The dialect of the test's store: parametrized for ``ON_BOTH_STORES``, else
    ``WARMCTL_TEST_DB`` (SQLite by default)."""
    dialect: str = getattr(request, "param", None) or default_dialect()
    return dialect


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.PostgresServer]:
    """The session's PostgreSQL (``tests/support/postgres.py``): started on first use.
    Missing, it fails the tests that need it under CI (the store would go untested on
    PostgreSQL without a word) and skips them elsewhere."""
    reason = pg.unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = pg.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres: pg.PostgresServer) -> Iterator[str]:
    """A PostgreSQL database migrated to head, once per session; tests get copies of it."""
    name = postgres.new_name("template")
    db = Database(postgres.create_database(name))
    db.migrate()
    db.close()  # a template is copied only while nobody is connected to it
    yield name
    postgres.drop_database(name)


@pytest.fixture
def postgres_url(postgres: pg.PostgresServer, postgres_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database of this test's own (dropped after)."""
    name = postgres.new_name("test")
    yield postgres.create_database(name, template=postgres_template)
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head, once per session; tests get copies of it."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.close()
    return path


@pytest.fixture
def database_url(request: pytest.FixtureRequest, store_dialect: str, tmp_path: Path,
                 migrated_template: Path) -> str:
    """The URL of a fresh store, migrated to head, in the test's dialect."""
    if store_dialect == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    path = tmp_path / "controlplane.db"
    path.write_bytes(migrated_template.read_bytes())
    return f"sqlite:///{path}"


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.close()
