"""Who may call the admin API: bearer tokens per role, and no cross-site writes.

Roles: ``read`` (GETs, the status page's data, ``/metrics``) and ``admin`` (everything,
loads, unloads, regenerations, restarts included). Tokens come from the settings
(``admin.read_token``, ``admin.admin_token``) or a file (``admin.token_file``), are compared
in constant time and never logged (pydantic's ``SecretStr`` hides them in reprs too).

With no token configured nothing is asked for, and the API refuses to listen anywhere but
on a loopback address: then only local programs reach it. A browser page on another site
can still make the browser send requests to localhost; mutating routes therefore refuse
cross-site requests (``Origin``/``Sec-Fetch-Site``), and without tokens the ``Host`` header
must name the loopback (a DNS-rebinding page would name its own host). No CORS headers are
ever sent, so other origins cannot read answers either.

Always open: ``/healthz`` and ``/readyz`` (probes), the page's HTML/JS shell and the API
docs (they carry no data; the page asks for a token when its data calls get 401).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controlplane.admin.errors import error_body
from controlplane.config import AdminSettings, Settings
from controlplane.errors import ConfigError
from controlplane.gateway.guard import Guard

READ, ADMIN = "read", "admin"
#: shortest token accepted: a guessable one would be worse than none, since it looks safe
MIN_TOKEN_CHARS = 16
#: route paths anyone may call (``PUBLIC_PREFIXES``: and everything under them)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/docs", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

_bearer = HTTPBearer(auto_error=False, description="a read or admin token (admin.*_token)")


class AuthError(Exception):
    """A refused request: 401 (no or unknown token) or 403 (role or origin)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Tokens:
    """The configured tokens as bytes (``hmac.compare_digest`` wants equal types)."""

    read: bytes | None = None
    admin: bytes | None = None

    @property
    def enabled(self) -> bool:
        return self.read is not None or self.admin is not None

    def role_of(self, token: str) -> str | None:
        """``admin``, ``read`` or None. Both comparisons always run, in constant time each,
        so timing tells nothing about which token (if any) was close."""
        given = token.encode("utf-8", "surrogateescape")
        is_admin = self.admin is not None and hmac.compare_digest(given, self.admin)
        is_read = self.read is not None and hmac.compare_digest(given, self.read)
        return ADMIN if is_admin else READ if is_read else None


def load_tokens(admin: AdminSettings) -> Tokens:
    """Tokens from the settings and ``admin.token_file``. ConfigError for an unreadable or
    malformed file, a role given twice, a short token, or one token for both roles."""
    found: dict[str, str] = {}
    for role, secret in ((READ, admin.read_token), (ADMIN, admin.admin_token)):
        if secret is not None and secret.get_secret_value():
            found[role] = secret.get_secret_value()
    if admin.token_file is not None:
        for role, token in _read_token_file(admin.token_file).items():
            if role in found:
                raise ConfigError(f"admin {role} token given both in the settings and in "
                                  f"{admin.token_file}: keep one")
            found[role] = token
    for role, token in found.items():
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"admin {role} token is shorter than {MIN_TOKEN_CHARS} "
                              "characters (e.g. `python -c 'import secrets; "
                              "print(secrets.token_urlsafe(32))'`)")
    if READ in found and found.get(ADMIN) == found[READ]:
        raise ConfigError("admin.read_token and admin.admin_token are the same token")
    return Tokens(**{role: token.encode() for role, token in found.items()})


def _read_token_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read admin.token_file {path}: {exc}") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        role, sep, token = (part.strip() for part in line.partition(":"))
        if not sep or role not in (READ, ADMIN) or not token or role in tokens:
            # the line itself is not repeated: it may hold a token
            raise ConfigError(f"{path} line {number}: expected `read: <token>` or "
                              "`admin: <token>`, each role once")
        tokens[role] = token
    return tokens


def gateway_guard(settings: Settings) -> Guard:
    """The gateway's rule for server-wide RPCs: the settings, or the admin token."""
    g = settings.gateway
    return Guard(allow_shared_memory=g.allow_shared_memory,
                 allow_server_settings=g.allow_server_settings,
                 allow_repository_control=g.allow_repository_control,
                 admin_token=load_tokens(settings.admin).admin)


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or a loopback name; false for ``0.0.0.0`` and the rest."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(admin: AdminSettings, tokens: Tokens) -> None:
    """Refuse to serve an unauthenticated admin API beyond this host."""
    if not tokens.enabled and not is_loopback(admin.host):
        raise ConfigError(
            f"the admin API would listen on {admin.host} with no token: anyone who reaches "
            "it could unload models. Set admin.admin_token (WARMCTL_ADMIN__ADMIN_TOKEN) and "
            "optionally admin.read_token, or admin.token_file, or listen on 127.0.0.1")


def _host_name(value: str) -> str:
    return (urlsplit(f"//{value}").hostname or "") if value else ""


def _check_origin(request: Request, allowed: frozenset[str]) -> None:
    """A mutating request must come from our own page, an allowed origin, or no browser."""
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin in allowed or (origin != "null" and urlsplit(origin).netloc == host):
            return
        raise AuthError(403, "permission_denied",
                        f"cross-origin request from {origin[:200]} refused (admin."
                        "allowed_origins lists origins whose pages may change state)")
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise AuthError(403, "permission_denied", "cross-site request refused")


def install_auth(app: FastAPI, admin: AdminSettings) -> Tokens:
    """Check the exposure, then guard every route added to ``app`` after this call."""
    tokens = load_tokens(admin)
    check_exposure(admin, tokens)
    allowed = frozenset(o.rstrip("/") for o in admin.allowed_origins)

    async def authorize(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> None:
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        mutating = request.method not in _SAFE_METHODS
        if mutating:
            _check_origin(request, allowed)
        if not tokens.enabled:
            # only loopback listens; a page that rebinds its own name to 127.0.0.1 still
            # sends its own name as Host
            if not is_loopback(_host_name(request.headers.get("host", ""))):
                raise AuthError(403, "permission_denied",
                                "the admin API without tokens answers only to a loopback "
                                "Host (localhost, 127.0.0.1, [::1])")
            return
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return
        role = tokens.role_of(credentials.credentials) if credentials is not None else None
        if role is None:
            raise AuthError(401, "unauthenticated",
                            "a bearer token is required (Authorization: Bearer <token>)"
                            if credentials is None else "unknown token")
        if mutating and role != ADMIN:
            raise AuthError(403, "permission_denied",
                            f"{request.method} {path} needs the admin token; this is a read "
                            "token")

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AuthError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status,
                            headers=headers)

    app.add_exception_handler(AuthError, refused)
    app.router.dependencies.append(Depends(authorize))
    return tokens
