from __future__ import annotations

from controlplane.triton.metrics import footprints, parse_prometheus

TEXT = """\
# HELP warmctl_resident_bytes Model instance memory
# TYPE warmctl_resident_bytes gauge
warmctl_resident_bytes{model_instance="r_0_0",kind="rss",model="r",version="1"} 100
warmctl_resident_bytes{model_instance="r_0_1",kind="rss",model="r",version="1"} 150
warmctl_resident_bytes{model_instance="r_0_0",kind="cuda_allocated",model="r",version="1"} 7
warmctl_load_phase_seconds{model_instance="r_0_0",model="r",phase="import",version="1"} 1.5
warmctl_load_phase_seconds{model_instance="r_0_1",model="r",phase="import",version="1"} 2.5
warmctl_request_shapes_total{model_instance="r_0_0",model="r",shape="x:1x4",version="1"} 3
warmctl_request_shapes_total{model_instance="r_0_1",model="r",shape="x:1x4",version="1"} 2
nv_inference_count{model="r",version="1"} 5
"""


def test_parse_keeps_only_the_prefix() -> None:
    samples = parse_prometheus(TEXT, prefix="warmctl_")
    assert len(samples) == 7
    assert samples[0].labels == {"model_instance": "r_0_0", "kind": "rss", "model": "r",
                                 "version": "1"}


def test_footprint_sums_instances_and_takes_slowest_phase() -> None:
    fp = footprints(parse_prometheus(TEXT, prefix="warmctl_"))["r"]
    assert fp.instances == 2
    assert fp.rss_bytes == 250
    assert fp.cuda_allocated_bytes == 7
    assert fp.load_phases == {"import": 2.5}
    assert fp.shapes == {"x:1x4": 5}
