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
    rollout_line,
    rollouts_table,
    scaling_lines,
    status_table,
)
from controlplane.cli_http import config_file, request, send
from controlplane.config import InstanceSettings, load_settings
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


#: ``--set`` keys that have an option (or the positional NAME) of their own
_OWN_OPTION = {"name": "NAME", "provider": "--provider", "url": "--url",
               "standby": "--standby"}
#: keys of ``[instances.<name>]`` that take text: ``--set cuda_visible_devices=0`` means
#: "0" (as in the settings file), not the number 0 the API would refuse
_TEXT_KEYS = frozenset(name for name, field in InstanceSettings.model_fields.items()
                       if field.annotation == (str | None))


def instance_setting(text: str) -> tuple[str, Any]:
    """``--set KEY=VALUE`` as ``(key, value)``: VALUE as JSON when it parses (``4096``,
    ``true``, ``null``, ``"text"``), else the text as written; a number or boolean given for
    a key that takes text stays text. Raises ArgumentTypeError without ``=``, or for a key
    with an option of its own (argparse then exits 2 with the usage)."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key in _OWN_OPTION:
        raise argparse.ArgumentTypeError(f"{key}: give it as {_OWN_OPTION[key]}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        return key, raw
    if key in _TEXT_KEYS and value is not None and not isinstance(value, str):
        return key, raw
    return key, value


def cmd_instances_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {**dict(args.set or []), "name": args.name}
    # an address means a Triton someone else runs: --url alone is enough for a static one
    provider = args.provider or ("static" if args.url else None)
    if provider:
        body["provider"] = provider
    if args.url:
        body["url"] = args.url
    if args.standby:
        body["standby"] = True
    view = request(args, "POST", "/instances", json=body)
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print("\n".join(instances_table([view])))
    print(f"{view['name']}: {view['state']}; watch it with `warmctl instances`")
    if args.standby:
        print(f"  once warm it stays outside routing until `warmctl instances promote "
              f"{view['name']}`")
    return 0


def cmd_instances_remove(args: argparse.Namespace) -> int:
    view = request(args, "DELETE", f"/instances/{args.name}",
                   params={"force": "true"} if args.force else None)
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    # the answer comes as the drain starts, in the background: say what happens next rather
    # than the state it had when asked
    print(f"{view['name']}: draining, then retired (requests in flight finish and its models "
          "are made ready elsewhere first); watch it with `warmctl instances`")
    return 0


def cmd_instances_promote(args: argparse.Namespace) -> int:
    view = request(args, "POST", f"/instances/{args.name}/promote")
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"{view['name']}: {view['state']}, "
          f"{'takes traffic now' if view['routable'] else 'not routable yet'}")
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    view = request(args, "GET", "/scaling")
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print("\n".join(scaling_lines(view)))
    return 0


def cmd_rollout_start(args: argparse.Namespace) -> int:
    view = request(args, "POST", f"/models/{args.model}/rollouts",
                   json={"version": args.version})
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(rollout_line(view))
    print(f"  watch it with `warmctl rollout status {view['model']}`")
    return 0


def cmd_rollout_status(args: argparse.Namespace) -> int:
    rollouts = request(args, "GET", f"/models/{args.model}/rollouts")
    if args.json:
        print(json.dumps(rollouts, indent=2))
    elif not rollouts:
        print(f"{args.model}: no rollouts yet (start one with `warmctl rollout start "
              f"{args.model} VERSION`)")
    else:
        print("\n".join(rollouts_table(rollouts)))
    return 0


def cmd_rollout_act(args: argparse.Namespace) -> int:
    view = request(args, "POST",
                   f"/models/{args.model}/rollouts/{args.id}/{args.rollout_action}")
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print(rollout_line(view))
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


def _client_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--admin-url``, ``--timeout``, ``--token``: accepted before the command
    (``warmctl --admin-url URL instances``) and after it. Only the top-level parser
    (``defaults``) has defaults: argparse copies every attribute a subcommand's parser sets
    over the top-level ones, so a default there would undo a value given before it."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--admin-url", default=default(os.environ.get("WARMCTL_ADMIN_URL")),
                        help="admin API of a running control plane (default: "
                             "$WARMCTL_ADMIN_URL, else from settings)")
    parser.add_argument("--timeout", type=float, default=default(330.0),
                        help="seconds to wait for the admin API (default 330)")
    parser.add_argument("--token", default=default(os.environ.get("WARMCTL_TOKEN")),
                        help="admin API bearer token (default: $WARMCTL_TOKEN, else the "
                             "admin token of the local settings)")


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

    _client_options(parser, defaults=True)

    def client_command(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        _client_options(p, defaults=False)
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

    instances = client_command("instances", "the fleet's Triton instances: state, routing, "
                               "requests in flight, memory, models; add, remove or promote "
                               "one", cmd_instances)
    instances.add_argument("--json", action="store_true")
    # no action: the listing, as before the actions existed
    actions = instances.add_subparsers(dest="instances_action", metavar="ACTION",
                                        help="none: list the instances")

    def instance_action(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_)
        p.add_argument("name", help="the instance")
        _client_options(p, defaults=False)
        # SUPPRESS: `warmctl instances --json add b` keeps the --json given before the action
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the instance as JSON")
        p.set_defaults(func=func)
        return p

    add = instance_action("add", "add a Triton instance while warmctl runs: it warms the "
                          "models planned for it, then serves (stored: back after a "
                          "restart)", cmd_instances_add)
    add.add_argument("--provider", choices=["embedded", "static"],
                     help="embedded: warmctl starts a tritonserver for it; static: one "
                          "running at --url (default: static with --url, else embedded)")
    add.add_argument("--url", metavar="HOST:PORT", help="static: its gRPC address")
    add.add_argument("--standby", action="store_true",
                     help="keep it warm outside routing until `warmctl instances promote`")
    add.add_argument("--set", action="append", type=instance_setting, metavar="KEY=VALUE",
                     help="any key of [instances.<name>] (memory_budget_mb=4096, "
                          "cuda_visible_devices=1, grpc_port=9001); VALUE is JSON when it "
                          "parses, else text; repeatable")
    instance_action("remove", "drain an instance without failing a request, then retire it "
                    "(and forget it)", cmd_instances_remove).add_argument(
        "--force", action="store_true", help="remove even the last instance that serves")
    instance_action("promote", "a standby instance takes traffic now",
                    cmd_instances_promote)
    rollout = client_command("rollout", "roll a model out to a new version: verified on "
                             "recorded samples, then shifted into traffic in steps (rolled "
                             "back at once on a regression)", cmd_rollout_status)
    rollout.add_argument("--json", action="store_true")
    rollout_actions = rollout.add_subparsers(dest="rollout_action", metavar="ACTION",
                                             required=True)

    def rollout_action(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p = rollout_actions.add_parser(name, help=help_)
        p.add_argument("model", help="the model")
        _client_options(p, defaults=False)
        # SUPPRESS: `warmctl rollout --json status m` keeps the --json given before the action
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the rollout(s) as JSON")
        p.set_defaults(func=func)
        return p

    rollout_action("start", "load VERSION beside the active version, verify it, then shift "
                   "the traffic to it in steps", cmd_rollout_start).add_argument(
        "version", help="the version folder to roll out to")
    rollout_action("status", "the model's rollouts, newest first, with the newest one's "
                   "verification", cmd_rollout_status)
    for action, what in (("pause", "hold a rollout at its step"),
                         ("resume", "go on with a paused rollout"),
                         ("promote", "shift the rest of the traffic at once (once its "
                                     "verification passed)"),
                         ("abort", "every request back to the active version, the new one "
                                   "unloaded")):
        rollout_action(action, what, cmd_rollout_act).add_argument(
            "id", type=int, help="the rollout (its ID in `warmctl rollout status`)")

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
    client_command("scaling", "the autoscaler: instances per state, its bounds and lead "
                   "time, its recent decisions and why, traffic ramps in progress",
                   cmd_scaling).add_argument("--json", action="store_true")

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
