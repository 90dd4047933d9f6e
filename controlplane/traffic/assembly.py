"""The traffic recorder built from the settings: retention, payload sampling for the models
that ask for it, range sampling, and admission of known models' declared inputs only."""

from __future__ import annotations

from controlplane.config import Settings
from controlplane.traffic.admission import DeclaredInputs
from controlplane.traffic.ranges import RangeSampler
from controlplane.traffic.recorder import PayloadSampler, TrafficRecorder
from controlplane.traffic.store import Retention, TrafficStore
from controlplane.triton.repository import ModelRepository


def build_recorder(settings: Settings, store: TrafficStore,
                   repository: ModelRepository) -> TrafficRecorder:
    """A recorder over ``store`` as ``[traffic]`` says (not started)."""
    t = settings.traffic
    sampled = settings.sampled_models()
    sampler = PayloadSampler(
        sampled, per_shape=t.sample_per_shape, max_sample_bytes=t.sample_max_bytes,
        max_model_bytes=t.sample_max_model_bytes) if sampled else None
    return TrafficRecorder(
        store,
        flush_interval_s=t.flush_interval_s,
        max_buffer=t.max_buffer,
        retention=Retention(
            requests_s=t.request_retention_h * 3600,
            usage_s=t.usage_retention_days * 86400,
            shapes_s=t.shape_retention_days * 86400,
            samples_s=t.sample_retention_days * 86400),
        sampler=sampler,
        ranges=RangeSampler(t.range_sample_every),
        # known models and their declared inputs only (traffic/admission.py)
        declared=DeclaredInputs(
            repository.names, lambda model: (i.name for i in repository.spec(model).inputs)),
    )
