"""Answers about a model that is not loaded, from its config.pbtxt.

Triton knows a model's metadata and config only while it is loaded; a client of the gateway
should not have to care, so for a cold model the gateway answers from the repository.
"""

from __future__ import annotations

from tritonclient.grpc import service_pb2

from controlplane.triton.repository import ModelRepository, parse_config


def metadata_response(repository: ModelRepository, model: str) -> bytes:
    spec = repository.spec(model)
    batch = [-1] if spec.max_batch_size > 0 else []
    response = service_pb2.ModelMetadataResponse(
        name=model, versions=repository.versions(model), platform=spec.backend)
    for tensors, target in ((spec.inputs, response.inputs), (spec.outputs, response.outputs)):
        for t in tensors:
            target.add(name=t.name, datatype=t.datatype, shape=[*batch, *t.dims])
    return bytes(response.SerializeToString())


def config_response(repository: ModelRepository, model: str) -> bytes:
    path = repository.model_dir(model) / "config.pbtxt"
    config = parse_config(path.read_text(), source=str(path))
    if not config.name:
        config.name = model
    return bytes(service_pb2.ModelConfigResponse(config=config).SerializeToString())
