"""The admin API's auth rules on a small app (no control plane): tokens, roles, origins,
the Host check without tokens, and the settings that refuse an exposed API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from controlplane.admin.auth import Tokens, check_exposure, install_auth, is_loopback, load_tokens
from controlplane.config import AdminSettings
from controlplane.errors import ConfigError

READ = "r" * 20
ADMIN = "a" * 20


def _app(**settings: object) -> FastAPI:
    app = FastAPI()
    install_auth(app, AdminSettings(**settings))  # type: ignore[arg-type]

    @app.get("/thing")
    async def get_thing() -> dict[str, str]:
        return {"ok": "read"}

    @app.post("/thing")
    async def post_thing() -> dict[str, str]:
        return {"ok": "written"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"ok": "health"}

    return app


async def _send(app: FastAPI, method: str, path: str, *, host: str = "127.0.0.1:8080",
                token: str | None = None, **headers: str) -> httpx.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as http:
        return await http.request(method, path, headers=headers)


async def test_roles() -> None:
    app = _app(read_token=READ, admin_token=ADMIN, host="0.0.0.0")
    host = "warmctl.internal:8080"
    assert (await _send(app, "GET", "/thing", host=host)).status_code == 401
    assert (await _send(app, "GET", "/healthz", host=host)).status_code == 200
    assert (await _send(app, "GET", "/thing", host=host, token=READ)).status_code == 200
    refused = await _send(app, "POST", "/thing", host=host, token=READ)
    assert refused.status_code == 403
    assert refused.json() == {"error": {"code": "permission_denied", "message":
                              "POST /thing needs the admin token; this is a read token"}}
    assert (await _send(app, "POST", "/thing", host=host, token=ADMIN)).status_code == 200
    assert (await _send(app, "GET", "/thing", host=host, token=ADMIN)).status_code == 200
    unknown = await _send(app, "GET", "/thing", host=host, token=ADMIN + "x")
    assert unknown.status_code == 401 and unknown.json()["error"]["message"] == "unknown token"
    basic = await _send(app, "GET", "/thing", host=host, Authorization="Basic eDp5")
    assert basic.status_code == 401


async def test_cross_site_writes_are_refused_even_with_the_admin_token() -> None:
    app = _app(admin_token=ADMIN, allowed_origins=["https://ops.example.com"])
    host = "127.0.0.1:8080"
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        response = await _send(app, "POST", "/thing", host=host, token=ADMIN, **headers)
        assert response.status_code == 403, headers
    for headers in ({"Origin": f"http://{host}"}, {"Origin": "https://ops.example.com"},
                    {"Sec-Fetch-Site": "same-origin"}, {}):
        response = await _send(app, "POST", "/thing", host=host, token=ADMIN, **headers)
        assert response.status_code == 200, headers


async def test_without_tokens_only_a_loopback_host_is_answered() -> None:
    app = _app()
    assert (await _send(app, "POST", "/thing", host="localhost:8080")).status_code == 200
    assert (await _send(app, "GET", "/thing", host="[::1]:8080")).status_code == 200
    # a DNS-rebinding page: same origin as far as the browser knows, but its own Host
    rebound = await _send(app, "POST", "/thing", host="evil.example:8080",
                          Origin="http://evil.example:8080")
    assert rebound.status_code == 403
    assert (await _send(app, "GET", "/thing", host="evil.example:8080")).status_code == 403


def test_no_token_refuses_a_non_loopback_address() -> None:
    with pytest.raises(ConfigError, match="no token"):
        check_exposure(AdminSettings(host="0.0.0.0"), Tokens())
    check_exposure(AdminSettings(host="127.0.0.1"), Tokens())
    check_exposure(AdminSettings(host="0.0.0.0"), Tokens(admin=b"x" * 16))
    with pytest.raises(ConfigError, match="no token"):
        _app(host="192.168.1.5")


def test_tokens_from_a_file_and_their_rules(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# mounted secret\nread: {READ}\nadmin: {ADMIN}\n")
    tokens = load_tokens(AdminSettings(token_file=path))
    assert tokens.role_of(READ) == "read" and tokens.role_of(ADMIN) == "admin"
    assert tokens.role_of("") is None and tokens.role_of(READ[:-1]) is None
    with pytest.raises(ConfigError, match="both in the settings and"):
        load_tokens(AdminSettings(token_file=path, admin_token=SecretStr("b" * 20)))
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_tokens(AdminSettings(admin_token=SecretStr("short")))
    with pytest.raises(ConfigError, match="the same token"):
        load_tokens(AdminSettings(admin_token=SecretStr(READ), read_token=SecretStr(READ)))
    path.write_text(f"writer: {ADMIN}\n")
    with pytest.raises(ConfigError, match="line 1") as caught:
        load_tokens(AdminSettings(token_file=path))
    assert ADMIN not in str(caught.value)  # the secret is not echoed
    with pytest.raises(ConfigError, match="cannot read"):
        load_tokens(AdminSettings(token_file=tmp_path / "missing"))


def test_tokens_never_show_in_reprs() -> None:
    settings = AdminSettings(admin_token=SecretStr(ADMIN))
    assert ADMIN not in repr(settings) and ADMIN not in str(settings.model_dump())


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", ""):
        assert not is_loopback(host), host
