"""How many gateway workers, on which ports, with what config (the app's wiring uses these).

``gateway.workers`` unset: half the cores are left to Triton, one to the control process, and
the rest (at most 8) serve the gateway -- at least 1, which keeps today's single process
(the gateway inside the control process, no workers). With 2 or more, the workers own the
public ports and the control process's own gateway listens on loopback for what they forward.
"""

from __future__ import annotations

import logging
import os
import socket

from controlplane.config import Settings
from controlplane.errors import ConfigError
from controlplane.gateway.workers.protocol import WorkerConfig

#: workers at most when the count is not set
MAX_DEFAULT_WORKERS = 8


def worker_count(configured: int | None, cores: int | None = None) -> int:
    if configured is not None:
        return configured
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores // 2 - 1))


def claim_port(host: str, port: int, setting: str) -> int:
    """``port`` if nothing listens there (a free one for 0), for the workers to share; a
    ConfigError naming ``setting`` when another program holds it (their SO_REUSEPORT
    sockets would otherwise share it with a stranger's, or fail one by one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as a listening server binds: a port whose last connections linger in TIME_WAIT
        # (a restart) is free; one that something listens on is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"the gateway cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc} ({setting})") from None
        return int(probe.getsockname()[1])


def worker_config(s: Settings, index: int, count: int, grpc_port: int,
                  http_port: int | None, internal_grpc: str,
                  internal_http: str | None, max_buffered_bytes: int) -> WorkerConfig:
    t, g = s.traffic, s.gateway
    return WorkerConfig(
        index=index, host=g.host, grpc_port=grpc_port, http_port=http_port,
        internal_grpc=internal_grpc, internal_http=internal_http,
        default_deadline_s=g.default_deadline_s,
        forward_timeout_s=max(s.triton.call_timeout_s, g.default_deadline_s),
        max_request_bytes=g.max_request_bytes,
        # the bound is the process's, and the workers are that many processes
        max_buffered_bytes=max(1, max_buffered_bytes // count),
        expose_tracebacks=g.expose_tracebacks, recording=t.enabled,
        sampled_models=tuple(s.sampled_models()), sample_per_shape=t.sample_per_shape,
        sample_max_bytes=t.sample_max_bytes, sample_max_model_bytes=t.sample_max_model_bytes,
        range_sample_every=t.range_sample_every,
        log_level=logging.getLogger("controlplane").getEffectiveLevel())
