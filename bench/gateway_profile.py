"""Where the gateway's time goes: the event loop's CPU time by part, under load.

    python bench/gateway_profile.py [--seconds 10] [--concurrency 16] [--protocol grpc]

Starts one control plane (the gateway inside it, ``gateway.workers = 1``) with the trivial
Python model, profiles the process (cProfile: every Python function called on the loop)
while perf_analyzer drives the gateway, and groups the functions' own time by part: gRPC's
Python layer (grpc.aio), aiohttp, the serving core (``controlplane/serving``), the front
doors (``controlplane/gateway``), the traffic recorder, the rest of the control plane, the
event loop and the standard library. cProfile slows Python code down, so the shares are
the figure to read (and the requests/s under the profiler only as a lower bound).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine
from bench.perf import perf_analyzer
from controlplane.app import ControlPlane
from controlplane.config import load_settings
from tests.support.repository import add_identity

PARTS = (("serving core", "/controlplane/serving/"), ("front doors", "/controlplane/gateway/"),
         ("traffic recorder", "/controlplane/traffic/"), ("control plane, other", "/controlplane/"),
         ("grpc (Python layer)", "/grpc/"), ("aiohttp", "/aiohttp/"),
         ("protobuf", "/google/protobuf/"), ("asyncio / stdlib", "/lib/python3"))


def _part(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C: socket, grpc core, uvloop)"
    for name, marker in PARTS:
        if marker in filename:
            return name
    return "other"


async def run(seconds: int, concurrency: int, protocol: str, state: Path) -> dict[str, object]:
    repo = state / "repository"
    repo.mkdir()
    add_identity(repo, "trivial")
    settings = load_settings(
        data_dir=state / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0}, gateway={"port": 0, "http_port": 0, "workers": 1},
        models={"trivial": {"pinned": True}})
    cp = ControlPlane(settings)
    await cp.start(wait_pinned=True)
    try:
        url = cp.gateway_url if protocol == "grpc" else cp.gateway_http_url
        assert url is not None
        await perf_analyzer(url, "trivial", concurrency, {"INPUT0": "4"}, 1000, protocol)
        profile = cProfile.Profile()
        profile.enable()
        result = await perf_analyzer(url, "trivial", concurrency, {"INPUT0": "4"},
                                     seconds * 1000, protocol)
        profile.disable()
    finally:
        await cp.stop()
    stats = pstats.Stats(profile)
    by_part: dict[str, float] = {}
    top: list[tuple[float, str]] = []
    raw = stats.stats  # type: ignore[attr-defined]
    for (filename, line, function), (_, _, tottime, _, _) in raw.items():
        part = _part(filename)
        by_part[part] = by_part.get(part, 0.0) + tottime
        top.append((tottime, f"{part}: {Path(filename).name}:{line} {function}"))
    total = sum(by_part.values())
    top.sort(reverse=True)
    return {
        "protocol": protocol, "concurrency": concurrency,
        "requests_per_s_under_profiler": round(result.throughput, 1),
        "profiled_cpu_s": round(total, 2),
        "share": {part: round(t / total, 3)
                  for part, t in sorted(by_part.items(), key=lambda kv: -kv[1])},
        "top_functions": [f"{t / total:.3f} {name}" for t, name in top[:15]],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = await run(args.seconds, args.concurrency, args.protocol, Path(tmp))
    print(json.dumps({"bench": "gateway_profile", "machine": machine(), **report}, indent=2))


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
