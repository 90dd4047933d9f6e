"""``warmctl``: run the control plane, and talk to a running one through its admin API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from controlplane import __version__
from controlplane.cli_format import progress, status_table
from controlplane.config import ENV_PREFIX, load_settings
from controlplane.errors import ControlPlaneError
from controlplane.observability.logs import configure_logging

DEFAULT_CONFIG = Path("warmctl.toml")


def config_file(explicit: Path | None) -> Path | None:
    """The settings file: ``--config``, else ``WARMCTL_CONFIG_FILE`` (None here: load_settings
    reads it), else ``./warmctl.toml`` when there is one."""
    if explicit is not None or os.environ.get(f"{ENV_PREFIX}CONFIG_FILE"):
        return explicit
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _admin_url(args: argparse.Namespace) -> str:
    if args.admin_url:
        return str(args.admin_url).rstrip("/")
    settings = load_settings(config_file(args.config))
    return f"http://{settings.admin.host}:{settings.admin.port}"


def _send(args: argparse.Namespace, method: str, path: str, *, slow: str | None = None,
          answers: tuple[int, ...] = (), **kw: Any) -> httpx.Response:
    """One admin API call. Every failure exits with one line (status 1), never a traceback.

    ``slow`` says what is still going on when the call times out while the control plane is
    up (a load goes on after its client gave up); ``answers``: error statuses that are answers.
    """
    url = _admin_url(args) + path
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
        httpx.get(_admin_url(args) + "/healthz", timeout=min(5.0, args.timeout))
    except httpx.HTTPError:
        return False
    return True


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):  # not our JSON error shape (a proxy's page)
        return response.text.strip()[:500] or response.reason_phrase


def _request(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    """:func:`_send`, then the answer's JSON (None when empty)."""
    response = _send(args, method, path, **kw)
    try:
        return response.json() if response.content else None
    except ValueError:
        raise SystemExit(f"warmctl: {method} {path} answered something that is not JSON: "
                         f"{response.text[:200]!r}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from controlplane.app import ControlPlane

    overrides: dict[str, Any] = {}
    if args.admin_port is not None:
        overrides["admin"] = {"port": args.admin_port}
    if args.triton_url:
        overrides["triton"] = {"url": args.triton_url}
    settings = load_settings(config_file(args.config), **overrides)
    configure_logging("debug" if args.verbose else settings.log.level, settings.log.format)
    control_plane = ControlPlane(settings)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await control_plane.start()
        instance = control_plane.instance
        print(f"warmctl: admin API {control_plane.admin_url}; inference gateway "
              f"{control_plane.gateway_url or 'off'}; Triton gRPC "
              f"{instance.grpc_url if instance else '?'}", flush=True)
        try:
            await stop.wait()
        finally:
            await control_plane.stop()

    import uvloop

    uvloop.run(serve())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    models = _request(args, "GET", "/models")
    ready = _request(args, "GET", "/readyz", answers=(503,))  # 503: not ready, an answer
    if args.json:
        print(json.dumps({"readiness": ready, "models": models}, indent=2))
        return 0
    print(f"control plane: {ready.get('status')} (triton {ready.get('triton')})")
    print("\n".join(status_table(models, wide=args.wide)))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    model = _request(args, "POST", f"/models/{args.model}/load",
                     slow=f"model '{args.model}' is still loading")
    load = "" if model.get("load_s") is None else f" (load {model['load_s']:.2f}s)"
    print(f"{model['name']}: {model['state']}{load}")
    return 0


def cmd_unload(args: argparse.Namespace) -> int:
    params = {"force": "true"} if args.force else None
    model = _request(args, "POST", f"/models/{args.model}/unload", params=params,
                     slow=f"model '{args.model}' is still unloading")
    print(f"{model['name']}: {model['state']} (held cold until `warmctl load` or "
          "`warmctl release`)")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    model = _request(args, "POST", f"/models/{args.model}/release")
    print(f"{model['name']}: {model['state']}, hold and back-off released")
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    model = args.model
    if args.action == "show":
        params: dict[str, Any] = {"format": "json" if args.json else "pbtxt"}
        if args.version:
            params["version"] = args.version
        if args.json:
            print(json.dumps(_request(args, "GET", f"/models/{model}/warmup-config",
                                      params=params), indent=2))
        else:
            print(_send(args, "GET", f"/models/{model}/warmup-config", params=params).text,
                  end="")
    elif args.action == "diff":
        params = {k: v for k, v in (("from", args.from_version), ("to", args.to_version)) if v}
        response = _send(args, "GET", f"/models/{model}/warmup-config/diff", params=params)
        print(response.text or "(no difference)", end="")
    else:
        stored = _request(args, "POST", f"/models/{model}/warmup-config/regenerate",
                          params={"reload": "true"} if args.reload else None,
                          slow=f"the warm-up of '{model}' is still being regenerated")
        print(f"{model}: warm-up v{stored['version']} ({stored['reason']}), "
              f"{len(stored['samples'])} samples, {stored['coverage']:.0%} of traffic covered")
    return 0


def cmd_triton(args: argparse.Namespace) -> int:
    if args.action == "restart":
        params = None if args.wait else {"wait": "false"}
        state = _request(args, "POST", "/triton/restart", params=params)
    else:
        state = _request(args, "GET", "/triton")
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    print(f"triton: {state['state']} ({state['reason']}), pid {state['pid'] or '-'}, "
          f"{state['restarts_in_window']} restart(s) lately"
          + (f", last exit: {state['last_exit']}" if state.get("last_exit") else ""))
    for model, outcome in (state.get("last_restore") or {}).items():
        print(f"  {model}: {outcome}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    plan = _request(args, "GET", "/plan")
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    budget = f"{plan['budget_mb']:.0f} MB" if plan["budget_mb"] else "unlimited"
    print(f"policy {plan['policy']} (param {plan['param']}), budget {budget}, "
          f"resident {plan['resident_mb']:.0f} MB")
    print(f"{'MODEL':<18} {'STATE':<8} {'LEVEL':<7} {'DECISION':<8} {'REQ/DAY':>8} "
          f"{'COLD/DAY':>8} {'GB*H/DAY':>8}  WHY")
    for m in plan["models"]:
        req, cold, cost = ("-" if m[k] is None else f"{m[k]:.1f}" for k in (
            "requests_per_day", "cold_starts_per_day_if_lazy", "warm_cost_gbh_per_day"))
        print(f"{m['model']:<18} {m['state']:<8} {m['level']:<7} {m['decision'] or '-':<8} "
              f"{req:>8} {cold:>8} {cost:>8}  {m['why'] or ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warmctl", description=__doc__)
    parser.add_argument("--config", type=Path,
                        help="TOML settings file (default: $WARMCTL_CONFIG_FILE, else "
                             "./warmctl.toml if present)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"warmctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start Triton (embedded unless --triton-url) and the "
                                         "control plane, and run until interrupted")
    serve.add_argument("--admin-port", type=int)
    serve.add_argument("--triton-url", help="gRPC address of an external Triton")
    serve.set_defaults(func=cmd_serve)

    def client_command(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--admin-url", default=os.environ.get("WARMCTL_ADMIN_URL"),
                       help="admin API of a running control plane (default: from settings)")
        p.add_argument("--timeout", type=float, default=330.0)
        p.add_argument("--token", default=os.environ.get("WARMCTL_TOKEN"),
                       help="admin API bearer token (default: $WARMCTL_TOKEN, else the "
                            "admin token of the local settings)")
        p.set_defaults(func=func)
        return p

    status = client_command("status", "models and their states", cmd_status)
    status.add_argument("--json", action="store_true")
    status.add_argument("--wide", action="store_true", help="reasons in full, not cut to fit")
    client_command("load", "load a model", cmd_load).add_argument("model")
    unload = client_command("unload", "unload a model", cmd_unload)
    unload.add_argument("model")
    unload.add_argument("--force", action="store_true", help="unload even a pinned model")
    client_command("release", "end the hold an unload put on a model (and its failure "
                   "back-off): lazy loads and the scheduler may load it again",
                   cmd_release).add_argument("model")

    triton = client_command("triton", "the supervised Triton: its state, or restart the "
                            "embedded one (its models are restored, pinned first)", cmd_triton)
    triton.add_argument("action", choices=["status", "restart"])
    triton.add_argument("--no-wait", dest="wait", action="store_false",
                        help="restart: return once Triton is live, before its models are back")
    triton.add_argument("--json", action="store_true")

    client_command("plan", "what the scheduler keeps, preloads and unloads, and why",
                   cmd_plan).add_argument("--json", action="store_true")

    warmup = client_command("warmup", "generated warm-up configs", cmd_warmup)
    warmup.add_argument("action", choices=["show", "diff", "regenerate"])
    warmup.add_argument("model")
    warmup.add_argument("--version", type=int, help="show: this version (default latest)")
    warmup.add_argument("--json", action="store_true", help="show: JSON instead of pbtxt")
    warmup.add_argument("--from", dest="from_version", type=int,
                        help="diff: older version (default: the one before --to)")
    warmup.add_argument("--to", dest="to_version", type=int,
                        help="diff: newer version (default latest)")
    warmup.add_argument("--reload", action="store_true",
                        help="regenerate: apply now while the loaded instance serves")

    from controlplane.policy.cli import add_simulate_parser

    add_simulate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # ``serve`` applies the settings' [log] level and format once it has read them;
    # httpx and apscheduler stay at WARNING (observability/logs.py)
    configure_logging("debug" if args.verbose else "info", "text")
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (``warmctl status | head -1``): no traceback, and nothing more
        # to write; exit as a Unix tool killed by SIGPIPE does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
    except ControlPlaneError as exc:
        print(f"warmctl: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable files, a data directory we may not create
        print(f"warmctl: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
