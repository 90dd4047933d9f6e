"""The plugin's compile-cache series, as the manager records them into a load's details."""

from __future__ import annotations

from controlplane.triton.metrics import footprints, parse_prometheus

TEXT = """\
# TYPE warmctl_compile_cache_bytes gauge
warmctl_compile_cache_bytes{model="m",version="1",model_instance="m_0",state="hit",key="abc"} 2048
warmctl_compile_cache_bytes{model="m",version="1",model_instance="m_1",state="hit",key="abc"} 4096
warmctl_load_phase_seconds{model="m",version="1",model_instance="m_0",phase="compile"} 1.5
warmctl_load_phase_seconds{model="p",version="1",model_instance="p_0",phase="import"} 1.0
"""


def test_compile_cache_state_key_and_size() -> None:
    found = footprints(parse_prometheus(TEXT, prefix="warmctl_"))
    assert found["m"].compile_cache == {"state": "hit", "key": "abc", "bytes": 4096}
    assert found["m"].load_phases == {"compile": 1.5}
    assert found["p"].compile_cache == {}  # not compiled: nothing to show
