from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.store.database import Database

ROOT = Path(__file__).resolve().parents[1]

# every test, the integration ones too, fails on a lifecycle transition missing from the
# table (lifecycle/states.py); in production one is logged and applied
os.environ.setdefault("WARMCTL_STRICT_TRANSITIONS", "1")
# the gateway inside the control process whatever the machine's cores (the default is a
# share of them): tests that want worker processes say so (tests/integration/
# test_gateway_workers.py); subprocesses started by tests inherit this
os.environ.setdefault("WARMCTL_GATEWAY__WORKERS", "1")


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head, once per session; tests get copies of it."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.close()
    return path


@pytest.fixture
def database(tmp_path: Path, migrated_template: Path) -> Iterator[Database]:
    path = tmp_path / "controlplane.db"
    path.write_bytes(migrated_template.read_bytes())
    db = Database(f"sqlite:///{path}")
    yield db
    db.close()
