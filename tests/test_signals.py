"""Ctrl-C, SIGTERM and SIGHUP at any moment of a run: 128 + N, one line, outputs finalised or never made.

Each test sweeps the moment the signal is sent over a whole run (start-up with
``import torch``, model loading, the first-run export, the stream, the
shutdown), measured first on this machine, rather than trusting one lucky
moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import count_frames, headless_env, make_pan_video, start_streamcam

pytestmark = [pytest.mark.timeout(900),
              pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the caught signals from /proc")]

NATIVE_CRASH = ("Traceback", "terminate called", "Fatal Python error", "core dumped", "Exception ignored")
FRAMES = 300


@dataclass
class Outcome:
    delay: float
    code: int
    err: str
    sent: bool  # False if the run had already ended
    folder: Path
    seconds: float  # from the command's first line to its end


def run_and_signal(folder: Path, delay: float, signums: list[int], gap: float = 0.0,
                   fresh_cache: bool = False) -> Outcome:
    """Start a run in ``folder``; after ``delay`` s send ``signums`` (``gap`` s apart); wait for it to end."""
    env = headless_env()
    if fresh_cache:
        env["STREAMCAM_CACHE_DIR"] = str(folder / "cache")
    process = start_streamcam("../in.mp4", "-o", "out.mp4", "--json", "out.jsonl", "--batch", "2", cwd=folder, env=env,
                              stderr=subprocess.PIPE)
    try:
        wait_for_handlers(process)
        started = time.monotonic()
        time.sleep(delay)
        sent = process.poll() is None
        for signum in signums:
            if process.poll() is None:
                process.send_signal(signum)
                time.sleep(gap)
        code = process.wait(timeout=60)
        return Outcome(delay, code, process.stderr.read(), sent, folder, time.monotonic() - started)
    finally:
        process.kill()


def wait_for_handlers(process: subprocess.Popen) -> None:
    """Until streamcam's own first line has run: its SIGTERM handler shows in the kernel's caught-signal mask.

    (Before that the interpreter is still starting, which no program can guard.)
    """
    status = Path(f"/proc/{process.pid}/status")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        caught = next((line for line in status.read_text().splitlines() if line.startswith("SigCgt:")), "SigCgt: 0")
        if int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.002)


def check(outcome: Outcome, expected: int) -> None:
    """The exit code, one clean line, and outputs that are either absent or complete and consistent."""
    where = f"signal after {outcome.delay:.2f} s: {outcome.err}"
    finished = f"explained {FRAMES} frames" in outcome.err  # the signal came as the process was leaving
    assert outcome.code == expected or (outcome.code == 0 and (finished or not outcome.sent)), where
    assert not any(mark in outcome.err for mark in NATIVE_CRASH), where
    out, records = outcome.folder / "out.mp4", outcome.folder / "out.jsonl"
    leftovers = [p.name for p in outcome.folder.iterdir() if ".partial" in p.name]
    assert not leftovers, where
    assert out.exists() == records.exists(), where
    if out.exists():  # frames were written: the recording and its records end on the same frame
        lines = records.read_text().splitlines()
        assert [json.loads(line)["frame"] for line in lines] == list(range(len(lines))), where
        assert count_frames(out) == len(lines) >= 1, where


def sweep(tmp_path: Path, name: str, delays: list[float], **kwargs) -> list[Outcome]:
    """Runs for every delay, two at a time (each in its own folder)."""
    folders = []
    for i in range(len(delays)):
        folder = tmp_path / f"{name}-{i}"
        folder.mkdir()
        folders.append(folder)
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda args: run_and_signal(args[0], args[1], **kwargs), zip(folders, delays)))


def aimed_at_the_stream(folder: Path, name: str, outcomes: list[Outcome], signums: list[int],
                        tries: int = 4) -> list[Outcome]:
    """More moments, until one lands while frames are being written: the machine's load may have changed
    since the calibration, moving every planned moment into the start-up (or past the end). Each try aims
    halfway between the latest moment that found no output and the earliest the run had ended by."""
    outcomes = list(outcomes)
    for attempt in range(tries):
        landed = [o for o in outcomes if o.sent]
        if any((o.folder / "out.mp4").exists() for o in landed):
            break
        early = max((o.delay for o in landed), default=0.0)
        late = min((o.delay for o in outcomes if not o.sent), default=2 * early + 1.0)
        retry = folder / f"{name}-aim{attempt}"
        retry.mkdir()
        outcomes.append(run_and_signal(retry, (early + late) / 2, signums))
    return outcomes


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory) -> tuple[Path, float]:
    """The input, and how long a whole run on it takes here (with the session's cache warm)."""
    folder = tmp_path_factory.mktemp("signals")
    make_pan_video(folder / "in.mp4", count=FRAMES, size=(320, 240))
    warm = folder / "warm"
    warm.mkdir()
    assert run_and_signal(warm, 0.0, []).code == 0  # fills the session's export cache
    durations = []

    def timed(outcome: Outcome) -> None:
        assert outcome.code == 0, outcome.err
        durations.append(outcome.seconds)

    for outcome in sweep(folder, "calibration", [0.0, 0.0], signums=[]):  # two at a time, as the sweeps run
        timed(outcome)
    return folder, max(durations)


def moments(total: float, count: int) -> list[float]:
    """``count`` moments, evenly spread from the first line of the command to just past its end."""
    return [total * 1.05 * i / (count - 1) for i in range(count)]


@pytest.mark.slow
@pytest.mark.parametrize("signum, expected, count", [
    (signal.SIGINT, 130, 12),
    (signal.SIGTERM, 143, 8),
    pytest.param(getattr(signal, "SIGHUP", 1), 129, 6, marks=pytest.mark.skipif(not hasattr(signal, "SIGHUP"),
                                                                                reason="no SIGHUP")),
])
def test_a_signal_at_any_moment(timed_run, signum, expected, count):
    folder, total = timed_run
    outcomes = sweep(folder, f"sig{signum}", moments(total, count), signums=[signum])
    outcomes = aimed_at_the_stream(folder, f"sig{signum}", outcomes, [signum])
    for outcome in outcomes:
        check(outcome, expected)
    # The sweep did land in every phase (the machine's speed varies, so only roughly as planned).
    landed = [o for o in outcomes if o.sent]
    assert len(landed) >= count // 2, [(o.delay, o.seconds) for o in outcomes]
    assert any((o.folder / "out.mp4").exists() for o in landed)  # mid-stream or in the shutdown
    assert any(not (o.folder / "out.mp4").exists() for o in landed)  # start-up


@pytest.mark.slow
def test_a_second_ctrl_c_only_shortens_the_wait(timed_run):
    folder, total = timed_run
    delays = moments(total, 6)
    for gap in (0.0, 0.1):
        for outcome in sweep(folder, f"double-{gap}", delays, signums=[signal.SIGINT, signal.SIGINT], gap=gap):
            check(outcome, 130)


@pytest.mark.slow
def test_a_signal_during_the_first_run_export_leaves_no_half_graph(timed_run, tmp_path):
    folder, total = timed_run
    # With an empty cache the run exports the model first; sweep over that longer start-up.
    outcomes = sweep(folder, "export", [1.0, 3.0, 6.0, 10.0, 15.0, 22.0], signums=[signal.SIGINT],
                     fresh_cache=True)
    for outcome in outcomes:
        check(outcome, 130)
        graphs = outcome.folder / "cache" / "graphs"
        entries = sorted(p.name for p in graphs.iterdir()) if graphs.exists() else []
        assert all(name.endswith(".onnx") and not name.startswith(".") for name in entries), entries


@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_leaves_nothing(tmp_path, signum, expected):
    """The quick check of the sweeps above (``-m slow``): a signal while torch and the model load."""
    make_pan_video(tmp_path / "in.mp4", count=10, size=(160, 120))
    folder = tmp_path / "run"
    folder.mkdir()
    outcome = run_and_signal(folder, 0.3, [signum])
    assert outcome.sent and outcome.code == expected, outcome.err
    assert not any(mark in outcome.err for mark in NATIVE_CRASH), outcome.err
    assert list(folder.iterdir()) == []  # no output, no partial file


# --- the rules, in this process -----------------------------------------------------------


@pytest.fixture
def handlers():
    from streamcam import interrupts

    restore = interrupts.install()
    yield interrupts
    restore()


def test_a_signal_waits_for_the_frame_being_written_then_lands(handlers):
    written = []
    with handlers.outputs_open(), pytest.raises(KeyboardInterrupt):
        with handlers.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler has run by now: held, not raised
            written.append("frame")
        written.append("after")  # not reached: raised as the block ended
    assert written == ["frame"] and handlers.received() == signal.SIGINT


def test_a_second_signal_cuts_the_shutdown_wait_short(handlers):
    import threading

    from streamcam.engine.stages import join_all

    with handlers.outputs_open():
        with pytest.raises(handlers.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        stuck = threading.Thread(target=threading.Event().wait, name="never-stops", daemon=True)
        stuck.start()
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # the second one: no exception
        started = time.monotonic()
        join_all([stuck], 10.0)
        waited = time.monotonic() - started
    assert 0.25 <= waited < 3
    assert handlers.hurried() and handlers.received() == signal.SIGTERM  # the exit code stays the first's
