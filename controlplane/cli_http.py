"""How ``warmctl``'s client commands reach a running control plane: its admin API over HTTP,
with the settings' address and token, and one line (never a traceback) for any failure."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

import httpx

from controlplane.cli_format import progress
from controlplane.config import ENV_PREFIX, load_settings
from controlplane.errors import ControlPlaneError

DEFAULT_CONFIG = Path("warmctl.toml")


def config_file(explicit: Path | None) -> Path | None:
    """The settings file: ``--config``, else ``WARMCTL_CONFIG_FILE`` (None here: load_settings
    reads it), else ``./warmctl.toml`` when there is one."""
    if explicit is not None or os.environ.get(f"{ENV_PREFIX}CONFIG_FILE"):
        return explicit
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def admin_url(args: argparse.Namespace) -> str:
    if args.admin_url:
        return str(args.admin_url).rstrip("/")
    settings = load_settings(config_file(args.config))
    return f"http://{settings.admin.host}:{settings.admin.port}"


def send(args: argparse.Namespace, method: str, path: str, *, slow: str | None = None,
          answers: tuple[int, ...] = (), **kw: Any) -> httpx.Response:
    """One admin API call. Every failure exits with one line (status 1), never a traceback.

    ``slow`` says what is still going on when the call times out while the control plane is
    up (a load goes on after its client gave up); ``answers``: error statuses that are answers.
    """
    url = admin_url(args) + path
    token = _token(args)
    if token:
        kw["headers"] = {**kw.get("headers", {}), "Authorization": f"Bearer {token}"}
    try:
        with progress(f"{method} {path}") if slow else contextlib.nullcontext():
            response = httpx.request(method, url, timeout=args.timeout, **kw)
    except httpx.TimeoutException as exc:
        if not isinstance(exc, httpx.ConnectTimeout) and _reachable(args):
            what = slow or f"{method} {path} has not answered"
            raise SystemExit(f"warmctl: {what} after {args.timeout:g}s; the control plane is "
                             "up and this goes on without us (see `warmctl status`, or wait "
                             "longer with --timeout)") from None
        raise SystemExit(f"warmctl: cannot reach the admin API at {url}: timed out after "
                         f"{args.timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise SystemExit(f"warmctl: cannot reach the admin API at {url}: {exc}") from None
    if response.status_code >= 400 and response.status_code not in answers:
        raise SystemExit(f"warmctl: {response.status_code}: {_error_message(response)}")
    return response


def _token(args: argparse.Namespace) -> str | None:
    """``--token``/``WARMCTL_TOKEN``, else the admin (or read) token of the local settings."""
    if getattr(args, "token", None):
        return str(args.token)
    from controlplane.admin.auth import load_tokens

    try:
        tokens = load_tokens(load_settings(config_file(args.config)).admin)
    except ControlPlaneError:
        return None
    found = tokens.admin or tokens.read
    return found.decode() if found else None


def _reachable(args: argparse.Namespace) -> bool:
    try:
        httpx.get(admin_url(args) + "/healthz", timeout=min(5.0, args.timeout))
    except httpx.HTTPError:
        return False
    return True


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):  # not our JSON error shape (a proxy's page)
        return response.text.strip()[:500] or response.reason_phrase


def request(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    """:func:`send`, then the answer's JSON (None when empty)."""
    response = send(args, method, path, **kw)
    try:
        return response.json() if response.content else None
    except ValueError:
        raise SystemExit(f"warmctl: {method} {path} answered something that is not JSON: "
                         f"{response.text[:200]!r}") from None
