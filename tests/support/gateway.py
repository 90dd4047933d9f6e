"""Talking to a control plane's gateway the way any tritonclient program does."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from controlplane.app import ControlPlane


def identity_input(values: list[list[float]]) -> list[grpcclient.InferInput]:
    """The one input of the identity test models (``INPUT0``, FP32, batch first)."""
    array = np.array(values, dtype=np.float32)
    tensor = grpcclient.InferInput("INPUT0", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return [tensor]


def gateway_client(cp: ControlPlane) -> grpcclient.InferenceServerClient:
    assert cp.gateway_url is not None
    return grpcclient.InferenceServerClient(cp.gateway_url)
