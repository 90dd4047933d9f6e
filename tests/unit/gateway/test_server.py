"""The gateway's listening socket: a busy port is refused, never shared."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from controlplane.errors import ConfigError
from controlplane.gateway.server import Gateway


def _gateway() -> Gateway:
    # start() needs no fleet: it only binds the port
    return Gateway(models=None, recorder=None, replicas=cast(Any, object()),
                   server_wide=cast(Any, SimpleNamespace(handlers=dict)))


async def test_a_second_gateway_on_a_busy_port_fails_clearly() -> None:
    first, second = _gateway(), _gateway()
    port = await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError) as refused:
            await second.start("127.0.0.1", port)
        assert str(refused.value) == (f"gateway cannot listen on 127.0.0.1:{port}: Address "
                                      "already in use (gateway.port / WARMCTL_GATEWAY__PORT)")
    finally:
        await second.stop(0)
        await first.stop(0)
