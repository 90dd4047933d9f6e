"""Error text that reaches clients: tracebacks stripped, names and lengths bounded."""

from __future__ import annotations

import traceback

from controlplane.errors import ModelLoadFailed, ModelNotFound, echo_name, shorten, strip_traceback

# as Triton 2.51's Python backend words them (seen with the embedded server)
INFER_ERROR = ("Failed to process the request(s) for model 'boom_0_0', message: ValueError: bad "
               "input value (1, 3)\n\nAt:\n  /models/boom/1/model.py(4): helper\n"
               "  /models/boom/1/model.py(8): execute\n")
LOAD_ERROR = ("load failed for model 'initfail': version 1 is at UNAVAILABLE state: Internal: "
              "RuntimeError: cannot open weights\n\nAt:\n  /models/initfail/1/model.py(15): "
              "initialize\n;\n")


def test_backend_frames_go_and_the_root_cause_stays() -> None:
    assert strip_traceback(INFER_ERROR) == (
        "Failed to process the request(s) for model 'boom_0_0', message: ValueError: bad "
        "input value (1, 3)")
    assert strip_traceback(LOAD_ERROR) == (
        "load failed for model 'initfail': version 1 is at UNAVAILABLE state: Internal: "
        "RuntimeError: cannot open weights;")


def test_a_standard_python_traceback_keeps_its_last_line() -> None:
    try:
        {}["weights"]
    except KeyError:
        text = "model said: " + traceback.format_exc()
    assert strip_traceback(text) == "model said: KeyError: 'weights'"


def test_text_without_frames_is_unchanged() -> None:
    assert strip_traceback("unexpected inference input 'X' for model 'm'") == (
        "unexpected inference input 'X' for model 'm'")


def test_shorten_keeps_start_and_end_within_the_limit() -> None:
    text = "ROOT CAUSE " + "x" * 100_000 + " LAST FRAME"
    short = shorten(text, 300)
    assert len(short) <= 300
    assert short.startswith("ROOT CAUSE xx")
    assert short.endswith("xx LAST FRAME")
    assert "100022 characters in all, middle cut" in short
    assert shorten("short", 300) == "short"


def test_a_huge_name_is_not_echoed_in_full() -> None:
    huge = "m" * 1_000_000
    assert echo_name(huge) == "m" * 100 + "...(1000000 characters)"
    assert str(ModelNotFound(huge)) == ("Request for unknown model: "
                                        f"'{'m' * 100}...(1000000 characters)' is not found")
    assert len(str(ModelLoadFailed(huge, "no"))) < 200
    assert echo_name("ranker") == "ranker"
    assert echo_name("a\nb") == "a\\nb"
