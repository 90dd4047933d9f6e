"""What the admin API adds around its routes: auth, metrics, the page, local API docs, and
an OpenAPI document that lists every error a route answers with, in the error shape.

``install_extras`` runs right after the app is created (the auth dependency applies to
routes added after it); ``openapi_with_errors`` runs when the document is first asked for,
so it sees every route.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.admin import routes_metrics, routes_page
from controlplane.admin.auth import install_auth
from controlplane.admin.errors import error_body
from controlplane.observability.metrics import Metrics

if TYPE_CHECKING:
    from controlplane.app import ControlPlane

log = logging.getLogger(__name__)

#: Swagger UI and ReDoc as the fastapi-offline package ships them (no CDN)
try:
    import fastapi_offline

    DOC_ASSETS: Path | None = Path(fastapi_offline.__file__).with_name("static")
except ImportError:  # pragma: no cover - a declared dependency
    DOC_ASSETS = None

_ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "model": {"type": "string"}}}},
}
_WHY = {400: "Invalid argument or unreadable model config",
        401: "No token, or an unknown one", 403: "Role, origin or Host refused",
        404: "Unknown model, instance, version or route", 409: "The model's state refuses it now",
        413: "Too large", 422: "Request validation failed", 500: "Internal error",
        503: "Triton unavailable, the control plane starting, or a load failed",
        504: "Deadline exceeded"}
_HEALTH = ("/healthz", "/readyz")


def install_extras(app: FastAPI, cp: ControlPlane) -> None:
    admin = cp.settings.admin
    install_auth(app, admin)
    _install_http_errors(app)
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # FastAPI's CDN pages
        app.router.routes[:] = [r for r in app.router.routes
                                if getattr(r, "path", None) != path]
    if admin.metrics:
        metrics = Metrics(cp)
        metrics.attach()
        app.state.metrics = metrics
    app.include_router(routes_metrics.router)
    app.include_router(routes_page.router)
    if DOC_ASSETS is not None:  # before /static, which would match its paths first
        app.mount("/static/docs", StaticFiles(directory=DOC_ASSETS), name="docs-assets")
        _install_docs(app)
    app.mount("/static", StaticFiles(directory=routes_page.STATIC), name="static")
    app.openapi = lambda: openapi_with_errors(app)  # type: ignore[method-assign]


def _install_docs(app: FastAPI) -> None:
    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} - Swagger UI",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url="/static/docs/redoc.standalone.js",
                              redoc_favicon_url="/static/docs/favicon.png",
                              with_google_fonts=False)


def _install_http_errors(app: FastAPI) -> None:
    """Unknown routes, wrong methods and unexpected exceptions answer in the error shape."""

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                 f"http_{exc.status_code}")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("admin API %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body("internal", f"internal error ({type(exc).__name__})"),
                            status_code=500)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def error_codes(method: str, path: str, has_params: bool) -> list[int]:
    """The error statuses one operation can answer with."""
    if path in _HEALTH:
        return [403, 500]  # 503 is documented by the route itself (the Health body)
    codes = {401, 403, 500, 503}
    if has_params:
        codes.add(422)
    if "{" in path:
        codes |= {400, 404}
    if method in ("post", "delete"):
        codes |= {400, 404, 409, 504}
    if path == "/plan":
        codes.add(409)  # the scheduler is disabled
    if path.startswith("/triton"):
        codes.add(404)  # ?instance= names no instance
    if path == "/metrics":
        codes.add(404)  # metrics are disabled
    return sorted(codes)


def openapi_with_errors(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            # parameters or a body can fail validation (422); a bearer token is not one
            has_params = bool(op.get("parameters") or op.get("requestBody"))
            for code in error_codes(method, path, has_params):
                responses[str(code)] = {"description": _WHY[code],
                                        "content": {"application/json": {"schema": ref}}}
            if path in _HEALTH:
                responses["503"] = {**responses["200"], "description": "Not healthy/ready"}
                op["security"] = []  # open to probes: no token asked
            if path.endswith("/warmup-config") and method == "get":
                responses["200"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    app.openapi_schema = schema
    return schema
