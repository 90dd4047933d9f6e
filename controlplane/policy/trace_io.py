"""CSV files of the simulator: TRACE.csv, MODELS.csv and EVENTS.csv.

* TRACE.csv: ``timestamp,model``; one row per request, float seconds from the trace start,
  sorted by time.
* MODELS.csv: ``model,memory_mb,load_s`` and optionally ``pinned`` (true/false, yes/no, 1/0).
* EVENTS.csv: ``time,model,event`` with event ``load_start``, ``ready`` or ``unload``, in the
  order they happened.

Readers reject anything malformed with a :class:`TraceFormatError` naming the file and line.
Floats are written with ``repr`` so that they read back bit for bit (a request exactly at a
ready time must stay exactly at it).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TextIO

from controlplane.policy.types import EVENT_KINDS, Event, EventKind, ModelProfile

_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n", ""}


class TraceFormatError(ValueError):
    """A malformed input file; the message names the file and the line."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


def _rows(path: Path, handle: TextIO, header: tuple[str, ...],
          optional: tuple[str, ...] = ()) -> Iterable[tuple[int, dict[str, str]]]:
    reader = csv.reader(handle)
    try:
        first = next(reader)
    except StopIteration:
        raise TraceFormatError(path, 1, f"empty file; expected header {','.join(header)}")\
            from None
    names = [c.strip() for c in first]
    if tuple(names[:len(header)]) != header or any(n not in optional
                                                   for n in names[len(header):]):
        raise TraceFormatError(path, 1, f"bad header {','.join(names)!r}; expected "
                               f"{','.join(header + optional)}"
                               + (" (last column optional)" if optional else ""))
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(names):
            raise TraceFormatError(path, line, f"expected {len(names)} fields, got {len(row)}")
        yield line, {n: c.strip() for n, c in zip(names, row, strict=True)}


def _float(path: Path, line: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(path, line, f"{field} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceFormatError(path, line, f"{field} {text!r} is not finite")
    return value


def read_models(path: Path | str) -> dict[str, ModelProfile]:
    path = Path(path)
    models: dict[str, ModelProfile] = {}
    with path.open(newline="") as handle:
        for line, row in _rows(path, handle, ("model", "memory_mb", "load_s"), ("pinned",)):
            name = row["model"]
            if not name:
                raise TraceFormatError(path, line, "empty model name")
            if name in models:
                raise TraceFormatError(path, line, f"model {name!r} listed twice")
            memory = _float(path, line, "memory_mb", row["memory_mb"])
            load = _float(path, line, "load_s", row["load_s"])
            if memory <= 0:
                raise TraceFormatError(path, line, f"memory_mb must be positive, got {memory}")
            if load <= 0:
                raise TraceFormatError(path, line, f"load_s must be positive, got {load}")
            pinned_text = row.get("pinned", "").lower()
            if pinned_text not in _TRUE | _FALSE:
                raise TraceFormatError(path, line, f"pinned {row['pinned']!r} is not a boolean")
            models[name] = ModelProfile(name, memory, load, pinned_text in _TRUE)
    if not models:
        raise TraceFormatError(path, None, "no models")
    return models


def read_trace(path: Path | str,
               known_models: Collection[str] | None = None) -> list[tuple[float, str]]:
    path = Path(path)
    trace: list[tuple[float, str]] = []
    previous = -math.inf
    with path.open(newline="") as handle:
        for line, row in _rows(path, handle, ("timestamp", "model")):
            t = _float(path, line, "timestamp", row["timestamp"])
            model = row["model"]
            if t < 0:
                raise TraceFormatError(path, line, f"negative timestamp {t}")
            if t < previous:
                raise TraceFormatError(path, line, f"timestamp {t} is before the previous row "
                                       f"({previous}); the trace must be sorted")
            if not model:
                raise TraceFormatError(path, line, "empty model name")
            if known_models is not None and model not in known_models:
                raise TraceFormatError(path, line, f"unknown model {model!r} (not in MODELS)")
            trace.append((t, model))
            previous = t
    return trace


def read_events(path: Path | str,
                known_models: Collection[str] | None = None) -> list[Event]:
    path = Path(path)
    events: list[Event] = []
    with path.open(newline="") as handle:
        for line, row in _rows(path, handle, ("time", "model", "event")):
            t = _float(path, line, "time", row["time"])
            kind = row["event"]
            if kind not in EVENT_KINDS:
                raise TraceFormatError(path, line, f"unknown event {kind!r}; expected one of "
                                       f"{', '.join(EVENT_KINDS)}")
            model = row["model"]
            if known_models is not None and model not in known_models:
                raise TraceFormatError(path, line, f"unknown model {model!r}")
            events.append(Event(t, model, _event_kind(kind)))
    return events


def _event_kind(text: str) -> EventKind:
    for kind in EVENT_KINDS:
        if kind == text:
            return kind
    raise ValueError(text)


def write_trace(path: Path | str, trace: Iterable[tuple[float, str]]) -> None:
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("timestamp", "model"))
        writer.writerows((repr(float(t)), m) for t, m in trace)


def write_models(path: Path | str, models: Mapping[str, ModelProfile]) -> None:
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("model", "memory_mb", "load_s", "pinned"))
        writer.writerows((p.name, repr(p.memory_mb), repr(p.load_s),
                          "true" if p.pinned else "false") for p in models.values())


def write_events(path: Path | str, events: Iterable[Event]) -> None:
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("time", "model", "event"))
        writer.writerows((repr(e.time), e.model, e.kind) for e in events)
