"""What of a request may be recorded: known models only, declared inputs only, bounded text.

Clients choose every name in a request. Stored as sent, a client could grow SQLite and the
recorder's buffer without bound (a megabyte-long input name per request, a new model name per
request). So an observation is kept only for a model of the repository, with the inputs its
config.pbtxt declares, and every string it carries bounded; requests for unknown models are
counted, never stored.

A model whose inputs come from ``auto_complete_config`` declares none in config.pbtxt: its
inputs are kept when Triton served the request (Triton checked the names against the completed
config), within the same bounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from controlplane.tensors import DATATYPES, TensorShape
from controlplane.traffic.observation import OK, Observation

#: longest input name kept for a model that declares none (Triton's own limits are far lower)
MAX_NAME = 256
#: most dims per input kept (Triton tensors rarely have more than 4)
MAX_DIMS = 16
#: most inputs per request kept for a model that declares none
MAX_INPUTS = 64
#: longest version string kept (Triton versions are decimal integers)
MAX_VERSION = 20


class DeclaredInputs:
    """``model -> declared input names`` (None: not a model of the repository), cached.

    Called for every recorded request: known models' answers are kept ``ttl_s``; the model
    list is the repository's own cached scan, so an unknown name costs a set lookup, and the
    cache holds only known models, whatever names clients send.
    """

    def __init__(self, names: Callable[[], frozenset[str]],
                 inputs: Callable[[str], Iterable[str]], *, ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._names = names
        self._inputs = inputs
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    def __call__(self, model: str) -> frozenset[str] | None:
        now = self._clock()
        cached = self._cache.get(model)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            known = model in self._names()
        except Exception:  # the repository is gone: nothing can be attributed to a model
            known = False
        if not known:
            self._cache.pop(model, None)
            return None
        try:
            declared = frozenset(self._inputs(model))
        except Exception:  # an unreadable config: the model cannot load; keep no names
            declared = frozenset()
        self._cache[model] = (now + self.ttl_s, declared)
        return declared


def _fits(tensor: TensorShape, declared: frozenset[str], trusted: bool) -> bool:
    # a model that declares no inputs: the names Triton accepted, within bounds
    named = tensor.name in declared if declared else trusted and len(tensor.name) <= MAX_NAME
    return named and tensor.datatype in DATATYPES and len(tensor.shape) <= MAX_DIMS


def admit(observation: Observation, declared: frozenset[str]) -> Observation:
    """``observation`` bounded for storage: undeclared or oversized inputs left out (and the
    payload with them, which must match its inputs), the version bounded."""
    inputs = observation.inputs
    limit = len(declared) or MAX_INPUTS
    version = observation.version
    trusted = observation.outcome == OK
    if len(inputs) <= limit and len(version) <= MAX_VERSION:
        # the usual case, _fits inlined: this runs on the gateway's event loop per request
        for t in inputs:
            named = t.name in declared if declared else trusted and len(t.name) <= MAX_NAME
            if not named or t.datatype not in DATATYPES or len(t.shape) > MAX_DIMS:
                break
        else:
            return observation
    kept = tuple(t for t in inputs if _fits(t, declared, trusted))[:limit]
    return observation._replace(
        version=version[:MAX_VERSION], inputs=kept,
        payload=observation.payload if len(kept) == len(inputs) else None,
        witness=observation.witness if len(kept) == len(inputs) else None)
