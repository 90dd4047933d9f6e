"""How many gateway workers by default, and the public port checked before they share it."""

from __future__ import annotations

import socket

import pytest

from controlplane.errors import ConfigError
from controlplane.gateway.workers.start import claim_port, worker_count


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (4, 1), (6, 2), (16, 7),
                                                (64, 8)])
def test_half_the_cores_go_to_triton_and_one_to_the_control_process(cores: int,
                                                                    workers: int) -> None:
    assert worker_count(None, cores) == workers
    assert worker_count(3, cores) == 3  # set: as set


def test_a_port_someone_listens_on_is_refused_by_the_setting_name() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as refused:
            claim_port("127.0.0.1", port, "gateway.port")
        assert f"127.0.0.1:{port}" in str(refused.value) and "gateway.port" in str(refused.value)
    free = claim_port("127.0.0.1", 0, "gateway.port")
    assert free > 0 and claim_port("127.0.0.1", free, "gateway.port") == free
