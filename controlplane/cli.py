"""``warmctl``: run the control plane, and talk to a running one through its admin API."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from controlplane import __version__
from controlplane.cli_format import (
    drain_lines,
    instances_table,
    plan_lines,
    status_table,
)
from controlplane.cli_http import config_file, request, send
from controlplane.config import load_settings
from controlplane.errors import ControlPlaneError
from controlplane.observability.logs import configure_logging


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
        runtimes = control_plane.fleet.order
        tritons = ", ".join(
            (f"{rt.name} " if len(runtimes) > 1 else "")
            + (rt.instance.grpc_url if rt.instance else "?") for rt in runtimes)
        print(f"warmctl: admin API {control_plane.admin_url}; inference gateway "
              f"{control_plane.gateway_url or 'off'}; Triton gRPC {tritons}", flush=True)
        try:
            await stop.wait()
        finally:
            await control_plane.stop()

    import uvloop

    uvloop.run(serve())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    models = request(args, "GET", "/models")
    ready = request(args, "GET", "/readyz", answers=(503,))  # 503: not ready, an answer
    if args.json:
        print(json.dumps({"readiness": ready, "models": models}, indent=2))
        return 0
    print(f"control plane: {ready.get('status')} (triton {ready.get('triton')})")
    print("\n".join(status_table(models, wide=args.wide)))
    return 0


def _on(args: argparse.Namespace) -> dict[str, str]:
    """``--instance`` as the query parameter the admin API takes."""
    return {"instance": args.instance} if getattr(args, "instance", None) else {}


def _replica(model: dict[str, Any], instance: str | None) -> dict[str, Any] | None:
    """The model's replica on ``instance``; None without one (or without ``instance``)."""
    for replica in model.get("replicas") or []:
        if replica["instance"] == instance:
            return dict(replica)
    return None


def _replica_state(model: dict[str, Any], instance: str | None) -> str:
    """The model's state on ``instance`` (its replica there), else the fleet's."""
    replica = _replica(model, instance)
    return str(model["state"]) if replica is None else f"{replica['state']} on {instance}"


def cmd_load(args: argparse.Namespace) -> int:
    model = request(args, "POST", f"/models/{args.model}/load", params=_on(args) or None,
                     slow=f"model '{args.model}' is still loading")
    # the model view's own figures are its best replica's, which may be on another
    # instance: with --instance, the load time is the replica's there
    figures = model if args.instance is None else _replica(model, args.instance) or {}
    load = "" if figures.get("load_s") is None else f" (load {figures['load_s']:.2f}s)"
    print(f"{model['name']}: {_replica_state(model, args.instance)}{load}")
    return 0


def cmd_unload(args: argparse.Namespace) -> int:
    params = {**_on(args), **({"force": "true"} if args.force else {})}
    model = request(args, "POST", f"/models/{args.model}/unload", params=params or None,
                     slow=f"model '{args.model}' is still unloading")
    print(f"{model['name']}: {_replica_state(model, args.instance)} (held cold until "
          "`warmctl load` or `warmctl release`)")
    return 0


def cmd_instances(args: argparse.Namespace) -> int:
    instances = request(args, "GET", "/instances")
    if args.json:
        print(json.dumps(instances, indent=2))
    else:
        print("\n".join(instances_table(instances)))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    report = request(args, "POST", f"/instances/{args.instance}/drain",
                      params={"force": "true"} if args.force else None,
                      slow=f"instance '{args.instance}' is still draining")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(drain_lines(report)))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    view = request(args, "POST", f"/instances/{args.instance}/resume")
    print(f"{view['name']}: {'routable' if view['routable'] else view['state']}, "
          "takes requests and replicas again")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    model = request(args, "POST", f"/models/{args.model}/release")
    print(f"{model['name']}: {model['state']}, hold and back-off released")
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    model = args.model
    if args.action == "show":
        params: dict[str, Any] = {"format": "json" if args.json else "pbtxt"}
        if args.version:
            params["version"] = args.version
        if args.json:
            print(json.dumps(request(args, "GET", f"/models/{model}/warmup-config",
                                      params=params), indent=2))
        else:
            print(send(args, "GET", f"/models/{model}/warmup-config", params=params).text,
                  end="")
    elif args.action == "diff":
        params = {k: v for k, v in (("from", args.from_version), ("to", args.to_version)) if v}
        response = send(args, "GET", f"/models/{model}/warmup-config/diff", params=params)
        print(response.text or "(no difference)", end="")
    else:
        stored = request(args, "POST", f"/models/{model}/warmup-config/regenerate",
                          params={"reload": "true"} if args.reload else None,
                          slow=f"the warm-up of '{model}' is still being regenerated")
        print(f"{model}: warm-up v{stored['version']} ({stored['reason']}), "
              f"{len(stored['samples'])} samples, {stored['coverage']:.0%} of traffic covered")
    return 0


def cmd_triton(args: argparse.Namespace) -> int:
    if args.action == "restart":
        params = {**_on(args), **({} if args.wait else {"wait": "false"})}
        state = request(args, "POST", "/triton/restart", params=params or None)
    else:
        state = request(args, "GET", "/triton", params=_on(args) or None)
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    print(f"triton {state.get('instance', '')}: {state['state']} ({state['reason']}), "
          f"pid {state['pid'] or '-'}, "
          f"{state['restarts_in_window']} restart(s) lately"
          + (f", last exit: {state['last_exit']}" if state.get("last_exit") else ""))
    for model, outcome in (state.get("last_restore") or {}).items():
        print(f"  {model}: {outcome}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    plan = request(args, "GET", "/plan")
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    print("\n".join(plan_lines(plan)))
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
    load = client_command("load", "load a model", cmd_load)
    load.add_argument("model")
    load.add_argument("--instance", help="on this Triton instance (default: ready on one "
                                         "the fleet chooses)")
    unload = client_command("unload", "unload a model", cmd_unload)
    unload.add_argument("model")
    unload.add_argument("--force", action="store_true", help="unload even a pinned model")
    unload.add_argument("--instance", help="from this Triton instance only (default: all)")
    client_command("release", "end the hold an unload put on a model (and its failure "
                   "back-off): lazy loads and the scheduler may load it again",
                   cmd_release).add_argument("model")

    triton = client_command("triton", "the supervised Triton: its state, or restart the "
                            "embedded one (its models are restored, pinned first)", cmd_triton)
    triton.add_argument("action", choices=["status", "restart"])
    triton.add_argument("--no-wait", dest="wait", action="store_false",
                        help="restart: return once Triton is live, before its models are back")
    triton.add_argument("--json", action="store_true")
    triton.add_argument("--instance", help="which Triton instance (default: the first)")

    client_command("instances", "the fleet's Triton instances: state, routing, requests in "
                   "flight, memory, models", cmd_instances).add_argument("--json",
                                                                         action="store_true")
    drain = client_command("drain", "drain a Triton instance: no new requests, its needed "
                           "models loaded elsewhere first, in-flight requests finish, then "
                           "its models are unloaded", cmd_drain)
    drain.add_argument("instance")
    drain.add_argument("--force", action="store_true",
                       help="drain even the last instance that serves")
    drain.add_argument("--json", action="store_true")
    client_command("resume", "end a drain: the instance takes requests again",
                   cmd_resume).add_argument("instance")

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
