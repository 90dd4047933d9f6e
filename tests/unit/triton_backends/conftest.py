"""The plugin's helper package is imported the way its model.py imports it: by path."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

PLUGIN = str(ROOT / "triton_backends" / "torchscript")
if PLUGIN not in sys.path:
    sys.path.insert(0, PLUGIN)
