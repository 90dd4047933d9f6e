"""The HTTP door's calls to one Triton's HTTP port (the instance's pool: ``Upstream.http``).

Triton's errors come back as :class:`~controlplane.serving.path.UpstreamError` carrying its
status, its message (from KServe's ``{"error": ...}`` shape) and the answer itself; an
instance that cannot be reached, or does not answer in time, as UNAVAILABLE or
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import json

import aiohttp

from controlplane.gateway.rest_wire import HEADER_LENGTH
from controlplane.serving.path import UpstreamError
from controlplane.serving.ports import Replica
from controlplane.serving.status import FROM_HTTP, Status

#: answer headers passed back to the client
ANSWER_HEADERS = ("Content-Type", HEADER_LENGTH, "Content-Encoding")
#: an answer from Triton: status, headers, body
Answer = tuple[int, dict[str, str], bytes]


async def forward(rt: Replica, path: str, body: bytes, headers: dict[str, str],
                  timeout_s: float) -> Answer:
    """POST ``body`` to ``path`` on the replica's Triton HTTP port. Raises UpstreamError
    with Triton's error (its message taken from KServe's error shape) or UNAVAILABLE /
    DEADLINE_EXCEEDED when it could not be reached or answered in time."""
    upstream = rt.upstream
    assert upstream is not None
    if upstream.http_url is None:
        raise UpstreamError(Status.UNAVAILABLE,
                            f"instance '{rt.name}' has no HTTP endpoint (http_url)")
    url = upstream.http_url + path
    try:
        async with upstream.http().post(
                url, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(timeout_s, 0.001))) as answer:
            payload = await answer.read()
            out = {h: answer.headers[h] for h in ANSWER_HEADERS if h in answer.headers}
    except aiohttp.ClientError as exc:
        raise UpstreamError(Status.UNAVAILABLE,
                            f"Triton at {upstream.http_url} is unreachable: {exc}") from None
    except TimeoutError:
        raise UpstreamError(Status.DEADLINE_EXCEEDED,
                            f"Triton did not answer within the request's deadline "
                            f"({timeout_s:.3g}s)") from None
    if answer.status != 200:
        raise UpstreamError(FROM_HTTP.get(answer.status, Status.INTERNAL),
                            triton_message(payload), (answer.status, out, payload))
    return answer.status, out, payload


def triton_message(payload: bytes) -> str:
    """The message of Triton's ``{"error": ...}`` answer (the body itself if it is none)."""
    try:
        found = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return payload[:4096].decode("utf-8", "replace")
    if isinstance(found, dict) and isinstance(found.get("error"), str):
        return str(found["error"])
    return payload[:4096].decode("utf-8", "replace")


async def get(rt: Replica, path: str, timeout_s: float) -> Answer:
    """GET ``path`` on the instance's Triton HTTP port (errors as ``rest.forward``)."""
    upstream = rt.upstream
    if upstream is None or upstream.http_url is None:
        raise UpstreamError(Status.UNAVAILABLE, f"instance '{rt.name}' has no HTTP endpoint")
    try:
        async with upstream.http().get(
                upstream.http_url + path,
                timeout=aiohttp.ClientTimeout(total=timeout_s)) as answer:
            payload = await answer.read()
            out = {h: answer.headers[h] for h in ANSWER_HEADERS if h in answer.headers}
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(Status.UNAVAILABLE,
                            f"Triton at {upstream.http_url} did not answer: {exc}") from None
    if answer.status >= 400:
        raise UpstreamError(Status.INTERNAL, triton_message(payload),
                            (answer.status, out, payload))
    return answer.status, out, payload
