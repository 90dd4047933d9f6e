"""``warmctl``: run the control plane, and talk to a running one through its admin API."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from controlplane.config import load_settings
from controlplane.errors import ControlPlaneError

DEFAULT_CONFIG = Path("warmctl.toml")


def _admin_url(args: argparse.Namespace) -> str:
    if args.admin_url:
        return str(args.admin_url).rstrip("/")
    settings = load_settings(args.config)
    return f"http://{settings.admin.host}:{settings.admin.port}"


def _request(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    url = _admin_url(args) + path
    try:
        response = httpx.request(method, url, timeout=args.timeout, **kw)
    except httpx.HTTPError as exc:
        raise SystemExit(f"warmctl: cannot reach the admin API at {url}: {exc}") from None
    body = response.json() if response.content else None
    if response.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise SystemExit(f"warmctl: {response.status_code}: {message or response.text}")
    return body


def _fmt_bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def cmd_serve(args: argparse.Namespace) -> int:
    from controlplane.app import ControlPlane

    overrides: dict[str, Any] = {}
    if args.admin_port is not None:
        overrides["admin"] = {"port": args.admin_port}
    if args.triton_url:
        overrides["triton"] = {"url": args.triton_url}
    settings = load_settings(args.config, **overrides)
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
    ready = httpx.get(_admin_url(args) + "/readyz", timeout=args.timeout).json()
    if args.json:
        print(json.dumps({"readiness": ready, "models": models}, indent=2))
        return 0
    print(f"control plane: {ready['status']} (triton {ready['triton']})")
    print(f"{'MODEL':<20} {'STATE':<10} {'PIN':<4} {'MEMORY':>9} {'LOAD':>7}  REASON")
    for m in models:
        load = "-" if m["load_s"] is None else f"{m['load_s']:.2f}s"
        print(f"{m['name']:<20} {m['state']:<10} {'yes' if m['pinned'] else '':<4} "
              f"{_fmt_bytes(m['memory_bytes']):>9} {load:>7}  {m['reason'] or ''}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    model = _request(args, "POST", f"/models/{args.model}/load")
    print(f"{model['name']}: {model['state']} (load {model['load_s']:.2f}s)")
    return 0


def cmd_unload(args: argparse.Namespace) -> int:
    params = {"force": "true"} if args.force else None
    model = _request(args, "POST", f"/models/{args.model}/unload", params=params)
    print(f"{model['name']}: {model['state']}")
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    model = args.model
    if args.action == "show":
        params: dict[str, Any] = {"format": "json" if args.json else "pbtxt"}
        if args.version:
            params["version"] = args.version
        url = _admin_url(args) + f"/models/{model}/warmup-config"
        if args.json:
            print(json.dumps(_request(args, "GET", f"/models/{model}/warmup-config",
                                      params=params), indent=2))
        else:
            response = httpx.get(url, params=params, timeout=args.timeout)
            if response.status_code >= 400:
                raise SystemExit(f"warmctl: {response.status_code}: "
                                 f"{response.json()['error']['message']}")
            print(response.text, end="")
    elif args.action == "diff":
        params = {k: v for k, v in (("from", args.from_version), ("to", args.to_version)) if v}
        response = httpx.get(_admin_url(args) + f"/models/{model}/warmup-config/diff",
                             params=params, timeout=args.timeout)
        if response.status_code >= 400:
            raise SystemExit(f"warmctl: {response.status_code}: "
                             f"{response.json()['error']['message']}")
        print(response.text or "(no difference)", end="")
    else:
        stored = _request(args, "POST", f"/models/{model}/warmup-config/regenerate",
                          params={"reload": "true"} if args.reload else None)
        print(f"{model}: warm-up v{stored['version']} ({stored['reason']}), "
              f"{len(stored['samples'])} samples, {stored['coverage']:.0%} of traffic covered")
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
                        default=DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None,
                        help="TOML settings file (default: ./warmctl.toml if present)")
    parser.add_argument("-v", "--verbose", action="store_true")
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
        p.set_defaults(func=func)
        return p

    client_command("status", "models and their states", cmd_status).add_argument(
        "--json", action="store_true")
    client_command("load", "load a model", cmd_load).add_argument("model")
    unload = client_command("unload", "unload a model", cmd_unload)
    unload.add_argument("model")
    unload.add_argument("--force", action="store_true", help="unload even a pinned model")

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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # one line per admin call, two per planning pass (every few seconds): noise at INFO;
    # the scheduler's own actions are logged and kept in GET /plan
    for noisy in ("httpx", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
    except ControlPlaneError as exc:
        print(f"warmctl: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
