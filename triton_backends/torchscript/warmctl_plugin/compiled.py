"""Serving a model under ``torch.compile``, with its compiled code kept in warmctl's cache.

Config parameters: ``torch_compile`` (``true`` to enable; ExportedProgram models only),
``torch_compile_mode`` (default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs),
``torch_compile_dynamic`` (true, false or auto), ``torch_compile_backend`` (default inductor),
``torch_compile_fallback`` (``eager``, the default: serve uncompiled when compiling fails;
``fail``: fail the load with the compiler's reason).

The cache (``cache.py``) is restored before the first compile; the first compile runs at
initialize on the inputs saved with the ExportedProgram, so a compiler that fails does so here,
where the load can fail cleanly or fall back (a failing warm-up sample can crash Triton). The
warm-up then compiles the traffic shapes, and whenever an ``execute`` compiled new graphs the
artifacts are saved again, so later loads restore what traffic really needed.
"""

from __future__ import annotations

import contextlib
import locale
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from warmctl_plugin.cache import CompileCache

log = logging.getLogger("warmctl.torch_compile")

#: the operator's own choice, read before torch runs: inductor sets the variable itself to its
#: machine-wide default the first time anything asks for its cache directory
_OPERATOR_INDUCTOR_DIR = os.environ.get("TORCHINDUCTOR_CACHE_DIR")

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileError(Exception):
    """Compiling failed and the config says ``torch_compile_fallback: fail``."""


def options(params: dict[str, str]) -> dict[str, Any] | None:
    """Validated compile options from the config's parameters; None when not compiling."""
    if params.get("torch_compile", "").strip().lower() not in ("1", "true", "yes"):
        return None
    mode = params.get("torch_compile_mode", "default").strip() or "default"
    if mode not in MODES:
        raise ValueError(f"torch_compile_mode={mode!r}: expected one of {', '.join(MODES)}")
    dynamic_text = params.get("torch_compile_dynamic", "auto").strip().lower() or "auto"
    dynamic = {"true": True, "false": False, "auto": None}.get(dynamic_text, "bad")
    if dynamic == "bad":
        raise ValueError(f"torch_compile_dynamic={dynamic_text!r}: expected true, false or auto")
    fallback = params.get("torch_compile_fallback", "eager").strip().lower() or "eager"
    if fallback not in ("eager", "fail"):
        raise ValueError(f"torch_compile_fallback={fallback!r}: expected eager or fail")
    return {"mode": mode, "dynamic": dynamic, "fallback": fallback,
            "backend": params.get("torch_compile_backend", "inductor").strip() or "inductor"}


def _utf8_locale() -> None:
    """The stub embeds Python without setting a locale, so files open as ASCII; inductor
    then fails reading its own UTF-8 templates (UnicodeDecodeError at torch.compile)."""
    if locale.getencoding().lower().replace("-", "") != "utf8":
        with contextlib.suppress(locale.Error):
            locale.setlocale(locale.LC_CTYPE, "C.UTF-8")


class CompiledModule:
    """Callable like the module it wraps; compiles at ``prepare`` and saves new artifacts."""

    def __init__(self, torch: Any, eager: Any, opts: dict[str, Any], cache: CompileCache,
                 metrics: Any) -> None:
        self.torch, self.eager, self.opts, self.cache = torch, eager, opts, cache
        self.metrics = metrics
        self.failed: str | None = None
        _utf8_locale()
        self._scratch: str | None = None
        if _OPERATOR_INDUCTOR_DIR is None:
            # Inductor's on-disk cache holds what the artifacts do not: the compiled kernels
            # (a CPU hit still ran g++ on every kernel without them). One per key inside the
            # entry, so it carries over with it, and a new key starts empty: a miss is a real
            # miss. Without warmctl's cache, a private one per instance, for the same reason.
            inductor_dir = cache.inductor_dir()
            if inductor_dir is None:
                inductor_dir = self._scratch = tempfile.mkdtemp(prefix="warmctl-inductor-")
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_dir
        self._graphs = 0
        self.module: Any = eager

    def prepare(self, example: tuple[Any, ...] | None) -> None:
        """Restore the cache, compile, and run ``example`` once (timed as ``compile``)."""
        t_import = time.perf_counter()
        with contextlib.suppress(ImportError):
            # Inductor's modules take seconds to import, hit or miss alike: a phase of their
            # own, so that ``compile`` shows what the cache saves.
            import torch._inductor.compile_fx  # noqa: F401
        self.metrics.phase("import_compiler", time.perf_counter() - t_import)
        t0 = time.perf_counter()
        restored = self.cache.restore(self.torch)
        self.metrics.phase("cache_restore", time.perf_counter() - t0)
        t1 = time.perf_counter()
        try:
            self.module = self.torch.compile(self.eager, mode=self._mode(),
                                             dynamic=self.opts["dynamic"],
                                             backend=self.opts["backend"])
            if example is not None:
                with self.torch.inference_mode():
                    self.module(*example)
        except Exception as exc:
            self._compile_failed(exc)
        self.metrics.add_phase("compile", time.perf_counter() - t1)
        state = "compile_failed" if self.failed else self.cache.state
        self.metrics.compile_cache(state, self.cache.key, restored)
        self.save()

    def __call__(self, *tensors: Any) -> Any:
        if self.failed is not None:
            return self.eager(*tensors)
        before = self._graph_count()
        t0 = time.perf_counter()
        try:
            out = self.module(*tensors)
        except Exception as exc:
            if not self._is_compiler_error(exc):
                raise  # the model's own error (bad ids, shapes): eager would fail as well
            self._compile_failed(exc)
            return self.eager(*tensors)
        if self._graph_count() != before:
            self.metrics.add_phase("compile", time.perf_counter() - t0)
        return out

    def save(self) -> None:
        """Save the artifacts if graphs were compiled since the last save."""
        count = self._graph_count()
        if self.failed is not None or count == self._graphs:
            return
        self._graphs = count
        size = self.cache.save(self.torch)
        if size:
            self.metrics.compile_cache(self.cache.state, self.cache.key, size)

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _mode(self) -> str | None:
        return None if self.opts["mode"] == "default" else str(self.opts["mode"])

    def _graph_count(self) -> int:
        counters = self.torch._dynamo.utils.counters
        return int(counters["stats"]["unique_graphs"])

    def _is_compiler_error(self, exc: Exception) -> bool:
        dynamo_exc = self.torch._dynamo.exc
        return isinstance(exc, (dynamo_exc.BackendCompilerFailed,
                                dynamo_exc.InternalTorchDynamoError))

    def _compile_failed(self, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        if self.opts["fallback"] == "fail":
            raise CompileError(f"torch.compile failed ({reason}); the config says "
                               "torch_compile_fallback: fail") from exc
        log.warning("torch.compile failed, serving the model uncompiled: %s", reason)
        self.failed = reason
        self.module = self.eager
