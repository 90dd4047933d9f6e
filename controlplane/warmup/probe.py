"""Ready means warm: after Triton reports a model ready, probe it until latency settles.

Probes go straight to Triton (not through the gateway, so they never count as usage). They
send, in order: each sample of the warm-up version not proven yet, once (a success proves it,
so the next load may put it into ``model_warmup``; a failure is recorded and it never is);
then the applied and proven samples, most frequent first, until latency settles. A model no
traffic reached yet gets one batch-1 request at the config's default dims when its data is
known to be safe (see :func:`controlplane.warmup.generate.default_probe`), else no probe.
Probe failures are harmless: the model is loaded already; they end up in the load details
(``probe_error``), and when every probe of a load failed, in the model's reason (the
lifecycle's ``loading.ready_reason``). Stateful, decoupled and ensemble models, and models
with warm-up switched off, get no probes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.grpc import aio as triton_aio
from tritonclient.utils import InferenceServerException

from controlplane.config import ProbeOptions
from controlplane.errors import ConfigError, ControlPlaneError
from controlplane.tensors import array_from_bytes, wire_name, zeros
from controlplane.triton.client import TritonClient
from controlplane.triton.repository import ModelSpec
from controlplane.warmup.batch_stats import BatchStatsTracker, warmup_figures
from controlplane.warmup.generate import default_probe
from controlplane.warmup.preparer import Applied, WarmupPreparer

#: probe errors kept in the load details, each bounded
_ERRORS_KEPT, _ERROR_CHARS = 3, 500
#: deadline of one probe request (the settle loop's ``max_s`` bounds the loop, not this)
_FIRST_REQUEST_S = 30.0


@dataclass(frozen=True)
class ProbeRequest:
    label: str
    inputs: list[grpcclient.InferInput]
    #: proof key when this probe proves a pending sample
    proves: str | None = None
    #: sent as this many concurrent copies (a batch-N sample: N requests of batch 1, the form
    #: Triton's warm-up takes)
    copies: int = 1


def sample_request(sample: dict[str, Any], files: dict[str, bytes], spec: ModelSpec,
                   *, batch: int | None = None) -> list[grpcclient.InferInput]:
    """ONE request carrying a ``model_warmup`` sample's whole batch (or ``batch`` rows),
    filled like the sample: zeros, or the data file's one batch element repeated. ValueError
    for bad sample data."""
    batch = max(1, int(sample.get("batch_size", 1)) if batch is None else batch)
    inputs = []
    for name, entry in sample["inputs"].items():
        dims = [int(d) for d in entry["dims"]]
        datatype = wire_name(entry["data_type"])
        shape = [batch, *dims] if spec.max_batch_size > 0 else dims
        if "input_data_file" in entry:
            one = array_from_bytes(datatype, dims, files[f"warmup/{entry['input_data_file']}"])
            array = one[None].repeat(batch, axis=0) if spec.max_batch_size > 0 else one
        elif datatype == "BYTES":
            raise ValueError(f"BYTES input '{name}' without data")
        else:
            array = zeros(datatype, shape)
        tensor = grpcclient.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def expected_warmup_executions(applied: list[dict[str, Any]], spec: ModelSpec,
                               own: list[dict[str, Any]] | None = None) -> int:
    """Executions Triton runs for a load's warm-up: each sample ``count`` times (0 means
    once), on every model instance; ``own``: the operator's samples in config.pbtxt."""
    samples = [*(own or []), *applied]
    return spec.instance_count * sum(max(1, int(s.get("count", 0))) for s in samples)


def settled(latencies: list[float], window: int, tolerance: float) -> bool:
    """The last ``window`` latencies all lie within ``tolerance`` of their median."""
    if len(latencies) < window:
        return False
    last = latencies[-window:]
    mid = statistics.median(last)
    return all(abs(x - mid) <= tolerance * mid for x in last)


class WarmupProbe:
    """The lifecycle's ReadinessProbe."""

    def __init__(self, *, preparer: WarmupPreparer, client: TritonClient,
                 options: ProbeOptions, batch_stats: BatchStatsTracker) -> None:
        self.preparer = preparer
        self.client = client
        self.options = options
        self.batch_stats = batch_stats
        self._aio: triton_aio.InferenceServerClient | None = None

    async def close(self) -> None:
        if self._aio is not None:
            await self._aio.close()
            self._aio = None

    async def probe(self, spec: ModelSpec) -> dict[str, Any]:
        entry = self.preparer.applied.get(spec.name) or Applied(self.preparer.effective(spec))
        figures: dict[str, Any] = {}
        if not entry.spec.inputs and entry.no_probe is None:
            # completed by auto_complete_config: Triton's config names the inputs
            try:
                self.preparer.remember_completed(spec.name,
                                                 await self.client.model_config(spec.name))
                entry.spec = self.preparer.effective(spec)
                figures["completed_config"] = True
            except ControlPlaneError as exc:
                figures["probe_error"] = f"reading the completed config: {exc}"[:_ERROR_CHARS]
        own = entry.spec.config.get("model_warmup", [])
        figures.update(warmup_figures(await self.batch_stats.settled_statistics(
            spec.name, expected=expected_warmup_executions(entry.applied, entry.spec, own))))
        if entry.no_probe is not None:
            figures["probe"] = f"none: {entry.no_probe}"
        elif self.options.max_probes:
            try:
                requests, notes = self._requests(entry)
                if notes:
                    figures["probe_notes"] = notes
                if requests:
                    figures.update(await self._probe(spec.name, requests))
            except Exception as exc:
                # the model is loaded: a probe's trouble (a malformed sample, the database
                # recording a proof) is recorded, never the load's end
                figures["probe_error"] = f"probes stopped: {exc}"[:_ERROR_CHARS]
        # probes and warm-up are not traffic; probes run one at a time, one execution each
        await self.batch_stats.reset(spec.name, expected=figures["warmup_executions"]
                                     + figures.get("probe_ok", 0))
        return figures

    def _requests(self, entry: Applied) -> tuple[list[ProbeRequest], list[str]]:
        spec, stored = entry.spec, entry.stored
        requests: list[ProbeRequest] = []
        notes: list[str] = []
        if stored is not None:
            chosen = [(s, True) for s in entry.pending] + [
                (s, False) for s in [*entry.applied, *entry.probe_only][:self.options.shapes]]
            for sample, to_prove in chosen:
                batch = int(sample.get("batch_size", 1))
                copies = batch if to_prove and spec.max_batch_size > 0 else 1
                try:
                    inputs = sample_request(sample, stored.files, spec,
                                            batch=1 if copies > 1 else None)
                except (ValueError, KeyError, InferenceServerException) as exc:
                    notes.append(f"{sample.get('name')}: no probe request: {exc}")
                    continue
                label = f"{sample['name']} (to prove)" if to_prove else sample["name"]
                requests.append(ProbeRequest(label, inputs,
                                             stored.sample_key(sample) if to_prove else None,
                                             copies))
        if requests:
            return requests, notes
        try:
            plan = default_probe(spec, settings=self.preparer.generator_settings())
        except ConfigError as exc:
            plan = str(exc)
        if isinstance(plan, str):
            notes.append(f"no probe: {plan}")
            return [], notes
        for sample in plan.model_warmup():
            requests.append(ProbeRequest(f"default {sample['name']}",
                                         sample_request(sample, dict(plan.files), spec)))
        return requests, notes

    async def _probe(self, model: str, requests: list[ProbeRequest]) -> dict[str, Any]:
        if self._aio is None:
            self._aio = triton_aio.InferenceServerClient(self.client.url)
        o = self.options
        # one request may be the model's very first execution (imports, allocations): give
        # it far longer than the settle loop's budget
        timeout = max(o.max_s, _FIRST_REQUEST_S)
        errors: list[str] = []
        timed_out: set[int] = set()
        proofs: dict[str, str | None] = {}
        latencies: dict[int, list[float]] = {}
        first: float | None = None
        ok = count = 0
        t0 = time.perf_counter()

        async def send(i: int) -> bool:
            nonlocal first, ok, count
            start = time.perf_counter()
            count += 1
            request = requests[i]
            results = await asyncio.gather(*(
                self._aio.infer(model, request.inputs,  # type: ignore[union-attr]
                                client_timeout=timeout)
                for _ in range(request.copies)), return_exceptions=True)
            for result in results:
                if isinstance(result, InferenceServerException):
                    message = (result.message() or str(result))[:_ERROR_CHARS]
                    errors.append(f"{request.label}: {message}")
                    if "DEADLINE_EXCEEDED" in str(result.status()):
                        timed_out.add(i)  # slow, not refused: no verdict on the sample
                    return False
                if isinstance(result, BaseException):
                    raise result
            elapsed = time.perf_counter() - start
            ok += 1
            first = elapsed if first is None else first
            latencies.setdefault(i, []).append(elapsed)
            return True

        # every pending sample once: the proof, bounded by the probe budget
        for i, request in enumerate(requests):
            if request.proves is not None and count < o.max_probes:
                served = await send(i)
                if served or i not in timed_out:
                    proofs[request.proves] = None if served else errors[-1]
        # then until the latency of each servable request settles
        live = [i for i, r in enumerate(requests)
                if r.proves is None or i in latencies][:o.shapes]
        while count < o.max_probes and time.perf_counter() - t0 < o.max_s:
            pending = [i for i in live
                       if not settled(latencies.get(i, []), o.window, o.tolerance)]
            if not pending:
                break
            for i in pending:
                if not await send(i):
                    live.remove(i)
        if proofs:
            await self.preparer.record_probes(model, proofs)
        top = latencies.get(live[0], [])[-o.window:] if live else []
        return {
            "probe_count": count,
            "probe_ok": ok,
            "probe_s": time.perf_counter() - t0,
            "first_probe_ms": None if first is None else first * 1e3,
            "probe_latency_ms": statistics.median(top) * 1e3 if top else None,
            "probe_converged": not errors and bool(live) and all(
                settled(latencies.get(i, []), o.window, o.tolerance) for i in live),
            **({"probe_proven": sum(e is None for e in proofs.values()),
                "probe_unproven": sum(e is not None for e in proofs.values())}
               if proofs else {}),
            **({"probe_error": "; ".join(errors[:_ERRORS_KEPT])
                + (f" (+{len(errors) - _ERRORS_KEPT} more)" if len(errors) > _ERRORS_KEPT
                   else ""),
                # on its own: the model's reason quotes it when every probe failed
                "probe_first_error": errors[0]} if errors else {}),
        }

