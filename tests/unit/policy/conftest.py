"""Shared helpers: the bench trace generator (bench/ is not a package) and small traces."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from controlplane.policy.types import ModelProfile

ROOT = Path(__file__).resolve().parents[3]


def _load_bench_traces() -> ModuleType:
    name = "bench_traces_for_tests"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "traces.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_traces() -> ModuleType:
    return _load_bench_traces()


@pytest.fixture(scope="session")
def small_trace(bench_traces: ModuleType) -> tuple[list[tuple[float, str]],
                                                    dict[str, ModelProfile]]:
    """Six hours, twelve models, every pattern: big enough to exercise every policy path."""
    shape = bench_traces.TraceShape("test", seed=7, n_models=12, hours=6,
                                    requests_per_hour=600.0, pinned=1)
    trace, models, _ = bench_traces.generate(shape)
    return trace, models
