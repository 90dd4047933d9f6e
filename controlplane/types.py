"""Type aliases shared across packages."""

from __future__ import annotations

from typing import Any, TypeAlias

#: A model name as Triton knows it (the directory name in the model repository).
ModelName: TypeAlias = str
#: A Triton instance's name in this control plane (``default`` for the one embedded server).
InstanceName: TypeAlias = str
#: A ModelConfig in Triton's JSON form (proto field names), as a ``config`` override takes it.
ModelConfigJson: TypeAlias = dict[str, Any]
#: Files sent with a load: path inside the model directory -> content.
ModelFiles: TypeAlias = dict[str, bytes]
#: A tensor shape as Triton reports it, batch dimension included.
Shape: TypeAlias = tuple[int, ...]
