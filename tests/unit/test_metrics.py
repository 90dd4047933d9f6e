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


def test_a_reload_beside_the_old_instance_is_another_instance_while_both_live() -> None:
    """Triton creates the new instance of a reload beside the old one, under the same name:
    each load reports its own series (``load_id``), both counted until the old one goes."""
    text = "\n".join(
        f'warmctl_resident_bytes{{model="r",version="1",model_instance="r_0",'
        f'load_id="{load}",kind="rss"}} {rss}' for load, rss in (("a1", 100), ("b2", 120)))
    fp = footprints(parse_prometheus(text, prefix="warmctl_"))["r"]
    assert fp.instances == 2 and fp.rss_bytes == 220
