"""Reading Triton's log for its fatal-signal handler's line, a bit at a time."""

from __future__ import annotations

from pathlib import Path

from controlplane.triton.server_log import fatal_signal


def test_the_fatal_signal_line_is_found_once_written_whole_and_only_after_start(
        tmp_path: Path) -> None:
    log = tmp_path / "triton.log"
    log.write_bytes(b"I1207 model loaded\nSignal (11) received.\n")  # an earlier run's
    found, at = fatal_signal(log, log.stat().st_size)
    assert found is None and at == log.stat().st_size
    with log.open("ab") as fh:
        fh.write(b"tcache_thread_shutdown(): unaligned tcache chunk detected\nSig")
    found, at2 = fatal_signal(log, at)
    assert found is None
    assert at2 == log.stat().st_size - 3  # the line being written is read again, whole
    with log.open("ab") as fh:
        fh.write(b"nal (6) received.\n 0# 0x000055 in /opt/tritonserver/bin/tritonserver\n")
    found, at3 = fatal_signal(log, at2)
    assert found == "Signal (6) received." and at3 == log.stat().st_size
    assert fatal_signal(log, at3) == (None, at3)
    assert fatal_signal(tmp_path / "gone.log", 0) == (None, 0)


def test_a_stop_is_no_fault(tmp_path: Path) -> None:
    log = tmp_path / "triton.log"
    log.write_bytes(b"I1207 successfully unloaded 'm' version 1\nSignal (2) received.\n"
                    b"Signal (15) received.\n")
    assert fatal_signal(log, 0)[0] is None
    with log.open("ab") as fh:
        fh.write(b"Signal (11) received.\n")
    assert fatal_signal(log, 0)[0] == "Signal (11) received."


def test_only_the_last_bytes_of_a_long_stretch_are_read(tmp_path: Path) -> None:
    log = tmp_path / "triton.log"
    log.write_bytes(b"Signal (6) received.\n" + b"x" * 1000 + b"\n")
    assert fatal_signal(log, 0, max_bytes=100)[0] is None
    assert fatal_signal(log, 0)[0] == "Signal (6) received."
