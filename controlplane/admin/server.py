"""The admin API's HTTP server: uvicorn on a socket bound here, so that port 0 works and the
real port is known before anything else starts (a taken port is a ConfigError naming it)."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from controlplane.errors import ConfigError
from controlplane.stopping import bounded

if TYPE_CHECKING:
    from controlplane.app import ControlPlane


class AdminServer:
    """``start`` binds ``admin.host:admin.port`` and serves the admin app in a task;
    ``stop`` asks uvicorn to exit and waits for it (bounded)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.port: int | None = None
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        s = self.cp.settings.admin
        return f"http://{s.host}:{self.port}"

    async def start(self) -> None:
        from controlplane.admin.app import create_admin_app  # the routes import the root

        self.app = create_admin_app(self.cp)
        # log_config=None: uvicorn's records go through warmctl's handler ([log] format)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                access_log=False, log_config=None)
        self._server = server = uvicorn.Server(config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = (self.cp.settings.admin.host, self.cp.settings.admin.port)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"admin API cannot listen on {address[0]}:{address[1]}: "
                              f"{exc.strerror}") from None
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="admin")
        while not server.started:
            if self._task.done():  # it ended before it started: say why
                await self._task
                raise ConfigError(f"admin API on {address[0]}:{self.port} did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await bounded("the admin API", self._task, 15)
