"""Fixtures that start a real tritonserver (the embedded binary) on free loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.app import ControlPlane
from controlplane.config import Settings, load_settings
from controlplane.lifecycle.manager import ModelManager
from controlplane.store.database import Database
from controlplane.store.lifecycle import LifecycleStore
from controlplane.triton.client import TritonClient
from controlplane.triton.distribution import TritonDistribution
from controlplane.triton.instance import TritonInstance
from controlplane.triton.metrics import PluginMetrics
from controlplane.triton.process import TritonProcess
from controlplane.triton.repository import ModelRepository
from tests.conftest import ROOT, default_dialect
from tests.support.postgres import PostgresServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module", autouse=True)
def _postgres_for_every_control_plane(request: pytest.FixtureRequest) -> Iterator[None]:
    """``WARMCTL_TEST_DB=postgresql``: settings a test builds itself (``load_settings``,
    module-scoped control planes, ``warmctl`` subprocesses) take ``WARMCTL_DATABASE_URL``, a
    PostgreSQL database of this module's own; ``make_settings`` gives each test one of its
    own instead (an explicit ``database_url`` wins over the environment)."""
    if default_dialect() != "postgresql":
        yield
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    template: str = request.getfixturevalue("postgres_template")
    name = server.new_name("module")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WARMCTL_DATABASE_URL", server.create_database(name, template=template))
        yield
    server.drop_database(name)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repository"
    path.mkdir()
    return path


def start_triton(tmp_path: Path, repo: Path) -> TritonProcess:
    distribution = TritonDistribution.locate()
    backends = distribution.assemble_backend_dir(ROOT / "triton_backends", tmp_path / "backends")
    process = TritonProcess(distribution, repo, backends, tmp_path / "triton.log",
                            stop_timeout_s=5)
    try:
        asyncio.run(process.launch())
    except BaseException:
        process.stop()
        raise
    return process


@pytest.fixture
def triton(tmp_path: Path, repo: Path) -> Iterator[TritonProcess]:
    """A tritonserver of its own for one test; stopped (and checked stopped) afterwards."""
    process = start_triton(tmp_path, repo)
    yield process
    process.stop()
    assert process.returncode is not None


@pytest.fixture
async def client(triton: TritonProcess) -> AsyncIterator[TritonClient]:
    c = TritonClient(triton.grpc_url, call_timeout_s=5, load_timeout_s=60, unload_timeout_s=30)
    yield c
    await c.close()


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, tmp_path: Path, repo: Path) -> Any:
    def make(**overrides: Any) -> Settings:
        if default_dialect() == "postgresql" and "database_url" not in overrides:
            # WARMCTL_TEST_DB=postgresql: the store on the test PostgreSQL, one database per
            # test (every control plane of the test shares it, as they share data_dir)
            overrides["database_url"] = request.getfixturevalue("postgres_url")
        triton = {"stop_timeout_s": 5, "load_timeout_s": 60, **overrides.pop("triton", {})}
        # the HTTP door on a free port too, unless the test says otherwise
        gateway = {"http_port": 0, **overrides.pop("gateway", {})}
        values: dict[str, Any] = {
            "gateway": gateway,
            "data_dir": tmp_path / "state",
            "model_repository": repo,
            "backends_dir": ROOT / "triton_backends",
            "admin": {"port": 0},
            "triton": triton,
            **overrides,
        }
        return load_settings(**values)

    return make


StartControlPlane = Callable[..., Awaitable[ControlPlane]]


@pytest.fixture
async def start_cp(make_settings: Callable[..., Settings]) -> AsyncIterator[StartControlPlane]:
    """Start whole control planes (gateway on a free port; settings as keyword overrides,
    nested sections merged over these defaults); each is stopped after the test."""
    started: list[ControlPlane] = []

    async def start(**overrides: Any) -> ControlPlane:
        gateway = {"port": 0, **overrides.pop("gateway", {})}
        cp = ControlPlane(make_settings(gateway=gateway, **overrides))
        await cp.start(wait_pinned=True)
        started.append(cp)
        return cp

    yield start
    for cp in started:
        await cp.stop()


MakeManager = Callable[..., ModelManager]


def triton_client(manager: ModelManager) -> TritonClient:
    """The gRPC client behind a manager's Triton port, to call Triton directly in a test."""
    instance = manager.instance
    assert isinstance(instance, TritonInstance)
    return instance.client


@pytest.fixture
async def make_manager(
    repo: Path, triton: TritonProcess, database: Database
) -> AsyncIterator[MakeManager]:
    made: list[ModelManager] = []

    def make(*, pinned: list[str] | None = None, load_timeout_s: float = 60,
             **options: Any) -> ModelManager:
        """A manager of the test's Triton (``options``: further ModelManager arguments)."""
        client = TritonClient(triton.grpc_url, call_timeout_s=5, load_timeout_s=load_timeout_s)
        instance = TritonInstance("default", client, PluginMetrics(triton.metrics_url), triton)
        manager = ModelManager(instance=instance, repository=ModelRepository(repo),
                               store=LifecycleStore(database, "default"), pinned=pinned,
                               **options)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.close()
        await triton_client(manager).close()
