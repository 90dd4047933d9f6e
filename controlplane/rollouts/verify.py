"""Verification of a new model version before any traffic reaches it.

Both versions are loaded side by side on one Triton (``version_policy { specific { versions:
[active, target] } }``); every sample goes to each version by ``model_version``, one request
at a time, for ``rounds`` rounds (the versions alternate going first, so neither always
pays for the other's cache misses). Checks, per answer of the target: it answered within
``timeout_s``, from the version asked; every declared output is there with its declared
datatype and shape; float outputs are finite; and, when ``atol``/``rtol``/``top_k`` are set,
it agrees with the active version's answer to the same sample. Then the target's converged
p50 (rounds after the first) must be within ``latency_factor`` x the active's, plus a floor.

The first failing sample ends the verification (a rollout is aborted on it, so the rest is
time spent for nothing); ``failures`` holds every problem of that sample. A sample the
active version itself fails is skipped: it says nothing about the target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import tritonclient.grpc as grpcclient
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from controlplane.rollouts.verify_checks import (
    Output,
    Outputs,
    converged_p50,
    declared_problems,
    disagreement,
    latency_problem,
    nonfinite_problems,
)
from controlplane.rollouts.verify_samples import GENERATED, Sample, SampleInput, samples_for
from controlplane.traffic.store import TrafficStore
from controlplane.triton.client import CHANNEL_OPTIONS, TritonClient
from controlplane.triton.repository import ModelRepository, ModelSpec
from controlplane.warmup.configs import WarmupStore

if TYPE_CHECKING:
    from controlplane.fleet.runtime import InstanceRuntime

__all__ = ["RecordedVerifier", "Sample", "SampleInput", "Verdict", "VerifyOptions",
           "samples_for", "verify_version"]

#: failures kept in a verdict, and characters per failure (Python tracebacks are long)
_FAILURES_KEPT, _FAILURE_CHARS = 10, 400


@dataclass(frozen=True)
class VerifyOptions:
    latency_factor: float = 2.0
    #: None (and rtol, top_k None): outputs are not compared with the active version's
    atol: float | None = None
    rtol: float | None = None
    #: compare the top-k indices of float (score) outputs instead of their values
    top_k: int | None = None
    max_samples: int = 32
    #: deadline of one request, seconds
    timeout_s: float = 10.0
    #: each sample is sent this many times per version; latency is the median of rounds 2..
    rounds: int = 5
    #: added to the latency bound, seconds: a 0.3 ms model must not fail on 0.4 ms of noise
    latency_floor_s: float = 0.002


@dataclass(frozen=True)
class Verdict:
    passed: bool
    #: one line: the first failure with its numbers, or a summary with both p50s
    reason: str
    #: samples the target was checked on (those the active version answered)
    samples: int
    active_p50_s: float | None
    target_p50_s: float | None
    #: each failed check, at most 10
    failures: tuple[str, ...]


class _Failed(Exception):
    """A sample failed: ``problems`` are its failed checks."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0])
        self.problems = problems


async def verify_version(client: TritonClient, model: str, active: str, target: str,
                         samples: Sequence[Sample], spec: ModelSpec,
                         options: VerifyOptions) -> Verdict:
    """Verify version ``target`` of ``model`` against version ``active`` on ``samples``
    (the first ``options.max_samples``), both loaded on ``client``'s Triton.

    Never raises for what Triton answers (errors, timeouts, an unreachable server all make a
    failed verdict); sends ``len(samples) x rounds x 2`` requests at most, one at a time.
    """
    chosen = list(samples[:options.max_samples])
    if not chosen:
        return _verdict(False, "no samples to verify on (none recorded, proven or "
                        "generated)", 0, None, None, ["no samples"])
    aio = triton_aio.InferenceServerClient(client.url, channel_args=CHANNEL_OPTIONS)
    try:
        return await _Verification(aio, model, active, target, spec, options).run(chosen)
    finally:
        await aio.close()


class RecordedVerifier:
    """A rollout's verification on one instance (``Rollouts``' verifier): the model's
    recorded samples, else proven probe inputs, else generated ones
    (:func:`samples_for`), sent to both versions (:func:`verify_version`)."""

    def __init__(self, repository: ModelRepository, traffic: TrafficStore,
                 warmups: WarmupStore) -> None:
        self.repository, self.traffic, self.warmups = repository, traffic, warmups

    async def __call__(self, rt: InstanceRuntime, model: str, active: str, target: str,
                       options: VerifyOptions) -> Verdict:
        assert rt.instance is not None
        spec = self.repository.spec(model)
        samples = await samples_for(model, spec, self.traffic, self.warmups,
                                    options.max_samples)
        return await verify_version(rt.instance.client, model, active, target, samples,
                                    spec, options)


class _Verification:
    def __init__(self, aio: triton_aio.InferenceServerClient, model: str, active: str,
                 target: str, spec: ModelSpec, options: VerifyOptions) -> None:
        self.aio, self.model, self.spec, self.options = aio, model, spec, options
        self.active, self.target = active, target
        self.latencies: dict[str, list[list[float]]] = {active: [], target: []}

    async def run(self, samples: list[Sample]) -> Verdict:
        usable, skipped = list(samples), []
        for round_ in range(max(1, self.options.rounds)):
            for version in (self.active, self.target):
                self.latencies[version].append([])
            for sample in list(usable):
                try:
                    if not await self._exchange(sample, round_):
                        usable.remove(sample)
                        skipped.append(sample)
                except _Failed as failed:
                    at = samples.index(sample) + 1
                    return _verdict(False, f"{failed.problems[0]} (sample {at} of "
                                    f"{len(samples)}, round {round_ + 1})",
                                    len(usable) if round_ else at - len(skipped), None, None,
                                    failed.problems)
            if not usable:
                first = skipped[0].label if skipped else "?"
                return _verdict(False, f"the active version v{self.active} answered none of "
                                f"{len(samples)} samples (first: {first}): nothing to verify "
                                "on", 0, None, None, ["no sample the active version answers"])
        active_p50 = converged_p50(self.latencies[self.active])
        target_p50 = converged_p50(self.latencies[self.target])
        assert active_p50 is not None and target_p50 is not None  # usable samples answered
        o = self.options
        slow = latency_problem(active_p50, target_p50, o.latency_factor, o.latency_floor_s)
        if slow is not None:
            return _verdict(False, f"v{self.target} {slow} ({len(usable)} samples)",
                            len(usable), active_p50, target_p50, [slow])
        compared = ("; outputs agree with the active version's"
                    if self._comparing else "")
        notes = "".join((
            f", {len(skipped)} skipped (the active version failed them)" if skipped else "",
            " (inputs generated from the config's declared shapes: nothing recorded or "
            "proven)" if usable[0].source == GENERATED else ""))
        return _verdict(True, f"{len(usable)} {usable[0].source} samples{notes}: answered, "
                        f"finite, declared shapes and types{compared}; p50 "
                        f"{target_p50 * 1e3:.2f} ms vs {active_p50 * 1e3:.2f} ms active",
                        len(usable), active_p50, target_p50, [])

    @property
    def _comparing(self) -> bool:
        o = self.options
        return o.atol is not None or o.rtol is not None or o.top_k is not None

    async def _exchange(self, sample: Sample, round_: int) -> bool:
        """Send ``sample`` to both versions; False when the active fails it (skip it).
        Raises _Failed with the target's problems."""
        order = (self.active, self.target) if round_ % 2 == 0 else (self.target, self.active)
        answers: dict[str, Outputs | str] = {}
        for version in order:
            answers[version] = await self._infer(sample.inputs, version, round_)
            if version == self.active and isinstance(answers[version], str):
                return False  # the target's answer could not be judged against it
        active, target = answers[self.active], answers[self.target]
        if isinstance(active, str):
            return False
        if isinstance(target, str):
            raise _Failed([f"v{self.target} failed {sample.label}: {target}"])
        problems = [*declared_problems(self.spec, target, sample.batch(self.spec)),
                    *nonfinite_problems(target)]
        if self._comparing and not problems:
            o = self.options
            problems.extend(problem for name, out in target.items() if name in active
                            if (problem := disagreement(name, out, active[name], atol=o.atol,
                                                        rtol=o.rtol, top_k=o.top_k)))
        if problems:
            raise _Failed([f"v{self.target} on {sample.label}: {p}" for p in problems])
        return True

    async def _infer(self, inputs: Sequence[SampleInput], version: str,
                     round_: int) -> Outputs | str:
        """The outputs of ``version``, or what went wrong; records the latency (s)."""
        tensors = []
        for i in inputs:
            tensor = grpcclient.InferInput(i.name, list(i.array.shape), i.datatype)
            tensor.set_data_from_numpy(i.array)
            tensors.append(tensor)
        timeout = self.options.timeout_s
        start = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.aio.infer(
                self.model, tensors, model_version=version, client_timeout=timeout),
                timeout + 1.0)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except InferenceServerException as exc:
            if "DEADLINE_EXCEEDED" in str(exc.status()):
                return f"no answer within {timeout:g} s"
            return exc.message() or str(exc)
        self.latencies[version][round_].append(time.perf_counter() - start)
        response = result.get_response()
        if response.model_version and response.model_version != version:
            return f"answered by version {response.model_version}, not {version}"
        outputs = {}
        for out in response.outputs:
            array = result.as_numpy(out.name)
            if array is None:
                return f"output '{out.name}' could not be decoded"
            outputs[out.name] = Output(out.datatype, array)
        return outputs


def _verdict(passed: bool, reason: str, samples: int, active_p50_s: float | None,
             target_p50_s: float | None, failures: Sequence[str]) -> Verdict:
    def line(text: str) -> str:
        flat = " ".join(text.split())
        return flat if len(flat) <= _FAILURE_CHARS else flat[:_FAILURE_CHARS - 3] + "..."

    return Verdict(passed, line(reason), samples, active_p50_s, target_p50_s,
                   tuple(line(f) for f in failures[:_FAILURES_KEPT]))
