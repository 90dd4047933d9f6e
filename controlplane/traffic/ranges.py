"""Value ranges of integer inputs, read from a sample of served requests at flush time.

A warm-up or probe request must carry valid data, and for an id input only the model knows
which values are valid (0 is not an id of every lookup table). Traffic that was served knows
too: the smallest and largest values of each integer input across a sample of OK requests
are a range any generated request can safely stay inside. The gateway only marks which
requests to read (a counter); the bytes are parsed here, on the flush thread.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from controlplane.tensors import DATATYPES
from controlplane.traffic.observation import OK, Observation

#: SQLite integers are signed 64-bit
_INT64_MAX = (1 << 63) - 1


class RangeSampler:
    """Picks one OK request in ``every`` (0: none) to read value ranges from; cheap enough
    for the gateway's hot path: a counter and a modulo."""

    def __init__(self, every: int) -> None:
        self.every = every
        self._seen = 0

    def wants(self) -> bool:
        if self.every <= 0:
            return False
        self._seen += 1
        return self._seen % self.every == 0


def observed_ranges(observations: Iterable[Observation]
                    ) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(model, input) -> (lo, hi inclusive, requests) over the integer inputs of the OK
    observations that carry raw bytes (a witness or a kept payload). Malformed spans (a size
    that does not fit the datatype) are skipped, never raised."""
    ranges: dict[tuple[str, str], tuple[int, int, int]] = {}
    for o in observations:
        raw_spans = o.witness or o.payload
        if raw_spans is None or o.outcome != OK:
            continue
        raw, spans = raw_spans
        for header, (start, end) in zip(o.inputs, spans, strict=False):
            info = DATATYPES.get(header.datatype)
            if info is None or not info.is_integer or end <= start:
                continue
            try:
                values = np.frombuffer(raw, dtype=info.storage, count=(end - start)
                                       // info.storage.itemsize, offset=start)
            except ValueError:
                continue
            if values.size == 0:
                continue
            lo, hi = int(values.min()), min(int(values.max()), _INT64_MAX)
            key = (o.model, header.name)
            old = ranges.get(key)
            ranges[key] = (min(lo, old[0]), max(hi, old[1]), old[2] + 1) if old else (lo, hi, 1)
    return ranges
