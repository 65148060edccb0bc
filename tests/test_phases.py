"""Never silent: what a user waits for is named on stderr (streamcam.phases)."""

from __future__ import annotations

import io
import logging
import sys
import time

import pytest

from streamcam import phases
from streamcam.cli import main

from conftest import PHASE_LINE, make_pan_video


@pytest.fixture
def logged(monkeypatch):
    """The streamcam logger's INFO lines, as a list; phases drawn as log lines (not on a terminal)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("streamcam")
    handler = Collect()
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    logger.setLevel(logging.INFO)
    phases.use_terminal(False)
    return lines


def test_a_short_phase_says_nothing_and_a_long_one_says_what_and_how_long(logged, monkeypatch):
    monkeypatch.setattr(phases, "QUIET_S", 0.2)
    with phases.phase("checking quickly"):
        pass
    assert logged == []
    with phases.phase("loading a big model"):
        time.sleep(0.6)
    assert logged[0] == "loading a big model..."
    assert logged[1].startswith("loading a big model: ") and float(logged[1].split(": ")[1][:-2]) >= 0.6
    assert all(PHASE_LINE.fullmatch(f"streamcam: {line}") for line in logged)  # what the tests' filter expects


def test_a_long_phase_is_named_before_what_it_logs(logged):
    with phases.phase("exporting", long=True):
        logging.getLogger("streamcam").info("tracing...")
    assert logged[:2] == ["exporting...", "tracing..."] and logged[2].startswith("exporting: ")


def test_on_a_terminal_the_phase_is_a_live_line_with_its_elapsed_time(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setattr(phases, "QUIET_S", 0.1)
    monkeypatch.setattr(phases, "REDRAW_S", 0.05)
    phases.use_terminal(True)
    try:
        with phases.phase("opening rtsp://camera"):
            time.sleep(1.3)
    finally:
        phases.use_terminal(False)
    drawn = screen.getvalue()
    assert "streamcam: opening rtsp://camera... 00:00" in drawn
    assert "streamcam: opening rtsp://camera... 00:01" in drawn  # redrawn as time passes, counted from the start
    assert drawn.count("\r") >= 5


def test_a_cli_run_names_each_wait(capsys, tmp_path, monkeypatch):
    """With the quiet period at 0, every phase of a run shows: the order a user would see them in."""
    monkeypatch.setattr(phases, "QUIET_S", 0.0)
    clip = make_pan_video(tmp_path / "in.mp4", count=3, size=(96, 64))
    code = main([str(clip), "--backend", "torch", "--no-display"])
    err = capsys.readouterr().err
    assert code == 0, err
    announced = [line for line in err.splitlines() if line.endswith("...")]
    assert announced[:2] == ["streamcam: opening the inputs...", "streamcam: loading efficientnet_lite0..."], err


def test_a_log_line_while_another_thread_is_still_importing_tqdm(monkeypatch):
    """The phase thread logs while the main thread imports tqdm: its module is there, its names not yet."""
    import types

    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))  # partly initialised: no ``tqdm`` yet
    written = []
    phases.log_write(lambda: written.append("line"))
    assert written == ["line"]


def test_a_failing_display_does_not_disturb_the_phase(monkeypatch, capsys):
    """The announcing thread fails (say, stderr is gone): the phase's own work goes on, with no traceback."""
    def broken(what, announced):
        raise OSError("stderr is gone")

    monkeypatch.setattr(phases, "_announce", broken)
    monkeypatch.setattr(phases, "QUIET_S", 0.0)
    done = []
    with phases.phase("loading"):
        time.sleep(0.05)
        done.append(True)
    assert done == [True]
    assert "Traceback" not in capsys.readouterr().err
