"""Video in and out through FFmpeg (PyAV): the same frames, size, rate and timestamps out as in; sound in sync;
live recordings at real speed; files that survive kill -9 and play in a browser; finite HTTP files read once."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import streamcam
import streamcam.sources
from streamcam.demo import pan_frames, photo
from streamcam.video_in import open_video_file

from conftest import TinyGapNet, fake_cameras, http_server, make_tiny_explainer, start_streamcam, streamcam_cli

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("headless")]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def tiny() -> streamcam.Explainer:
    return make_tiny_explainer()


def make_clip(path: Path, times: list[float], size=(320, 240), time_base=Fraction(1, 90_000),
              rate: Fraction | None = None, tone: tuple[float, float] | None = None, audio_codec: str = "aac",
              rotation: int | None = None, image: np.ndarray | None = None) -> Path:
    """A clip whose frames (the cat panning) sit at ``times``; ``tone``: a 440 Hz beep over (start, end) s,
    silence elsewhere, for the whole clip; ``rotation``: a display matrix turning it counter-clockwise."""
    if rate is None:
        rate = Fraction(round(1 / (times[1] - times[0]))) if len(times) > 1 else Fraction(25)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.time_base = video.codec_context.time_base = time_base
        video.options = {"bf": "0", "preset": "ultrafast"}
        if rotation:
            video.set_display_rotation(rotation)
        audio = None
        if tone is not None:
            audio = out.add_stream(audio_codec, rate=48_000)
            audio.layout = "mono"
        if image is not None and image.shape[:2] == (size[1], size[0]):
            frames = [(image, None)] * len(times)  # this very picture, every frame
        else:
            frames = pan_frames(photo("chelsea") if image is None else image, size, len(times))
        for (picture, _), t in zip(frames, times):
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
            frame.pts, frame.time_base = round(t / time_base), time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            hz = 48_000
            clock = np.arange(round((times[-1] + 0.5) * hz)) / hz
            beep = ((clock >= tone[0]) & (clock < tone[1])) * 0.5 * np.sin(2 * np.pi * 440 * clock)
            pcm = audio_codec.startswith("pcm_s16")
            samples = (beep * 32767).astype(np.int16) if pcm else beep.astype(np.float32)
            for start in range(0, len(samples), 1024):
                frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="s16" if pcm else "fltp",
                                                   layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = hz, start, Fraction(1, hz)
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return path


def video_facts(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * f.time_base) for f in container.decode(stream)]
        return {"times": times, "size": (stream.width, stream.height), "rate": stream.average_rate,
                "codec": stream.codec_context.name, "audio": [s.codec_context.name for s in container.streams.audio]}


def first_sound(path: Path) -> tuple[float, float]:
    """(the time of the first loud sample, the end of the sound) in seconds."""
    with av.open(str(path)) as container:
        first, end = None, 0.0
        for frame in container.decode(audio=0):
            samples = frame.to_ndarray().astype(np.float32).reshape(-1)
            samples /= 32768.0 if frame.format.name.startswith("s16") else 1.0
            start = float(frame.pts * frame.time_base)
            loud = np.flatnonzero(np.abs(samples) > 0.1)
            if first is None and loud.size:
                first = start + loud[0] / frame.sample_rate
            end = start + frame.samples / frame.sample_rate
        return first, end


# --- out as in --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, tolerance", [(".mp4", 1e-6), (".mov", 1e-6), (".mkv", 1e-3)])
def test_frames_size_rate_and_timestamps_out_as_in(tmp_path, tiny, suffix, tolerance):
    times = [i * 1001 / 30000 for i in range(40)]
    source = make_clip(tmp_path / "in.mp4", times, time_base=Fraction(1, 30000), rate=Fraction(30000, 1001))
    summary = streamcam.run(source, tmp_path / f"out{suffix}", display=False, explainer=tiny,
                            json=str(tmp_path / "r.jsonl"))
    out = video_facts(tmp_path / f"out{suffix}")
    assert out["size"] == (320, 240) and out["codec"] == "h264"
    assert len(out["times"]) == len(times) == summary.frames
    assert np.allclose(out["times"], times, atol=tolerance)
    assert abs(float(out["rate"]) - 30000 / 1001) < 0.01
    records = [json.loads(line)["time"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert np.allclose(records, times, atol=1e-6)
    assert summary.encoders == {str(tmp_path / f"out{suffix}"): "libx264"}


def test_a_variable_frame_rate_input_keeps_its_timing(tmp_path, tiny):
    times = [i / 30 for i in range(30)] + [1 + i / 15 for i in range(15)]  # 30 fps for 1 s, then 15 fps
    source = make_clip(tmp_path / "vfr.mp4", times, rate=Fraction(20))
    streamcam.run(source, tmp_path / "out.mp4", display=False, explainer=tiny, json=str(tmp_path / "r.jsonl"))
    out = video_facts(tmp_path / "out.mp4")["times"]
    assert np.allclose(out, times, atol=1e-4)  # not 45 frames at a constant 20 fps
    records = [json.loads(line)["time"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert np.allclose(records, times, atol=1e-4) and records[-1] == pytest.approx(1 + 14 / 15, abs=1e-4)


def test_odd_sizes_are_kept_exactly(tmp_path, tiny):
    times = [i / 25 for i in range(10)]
    source = make_clip(tmp_path / "in.mkv", times, size=(320, 240))
    # an odd-sized input, written by our own writer (libx264 4:4:4)
    from streamcam.video_out import VideoWriter

    writer = VideoWriter(tmp_path / "odd.mp4", 321, 241, 25.0, Fraction(1, 25))
    for i, (picture, _) in enumerate(pan_frames(photo("chelsea"), (321, 241), 10)):
        writer.write(picture, i / 25)
    writer.close()
    streamcam.run(tmp_path / "odd.mp4", tmp_path / "out.mp4", display=False, explainer=tiny)
    out = video_facts(tmp_path / "out.mp4")
    assert out["size"] == (321, 241) and len(out["times"]) == 10
    assert source.exists()


def test_a_rotated_phone_video_comes_out_upright(tmp_path, tiny):
    marker = np.zeros((120, 160, 3), np.uint8)
    marker[90:, 120:] = 255  # bright block at the bottom right of the stored picture
    times = [i / 25 for i in range(5)]
    source = make_clip(tmp_path / "phone.mp4", times, size=(160, 120), rotation=90, image=marker)
    with open_video_file(source) as opened:
        first = next(iter(opened.frames())).image
    assert first.shape == (160, 120, 3)  # turned a quarter counter-clockwise: bottom right -> top right
    assert first[:30, 90:].mean() > 200 and first[-30:, :30].mean() < 50
    streamcam.run(source, tmp_path / "out.mp4", display=False, explainer=tiny)
    assert video_facts(tmp_path / "out.mp4")["size"] == (120, 160)


# --- sound ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, audio_codec, expected", [
    (".mp4", "aac", "aac"),  # copied
    (".mkv", "pcm_s16le", "aac"),  # .mp4 out: re-encoded (browsers do not play PCM in MP4)
])
def test_sound_is_carried_over_in_sync(tmp_path, tiny, suffix, audio_codec, expected):
    times = [i / 25 for i in range(50)]  # 2 s
    source = make_clip(tmp_path / f"in{suffix}", times, tone=(1.0, 1.5), audio_codec=audio_codec)
    streamcam.run(source, tmp_path / "out.mp4", display=False, explainer=tiny)
    out = video_facts(tmp_path / "out.mp4")
    assert out["audio"] == [expected] and len(out["times"]) == 50
    beep, end = first_sound(tmp_path / "out.mp4")
    frame = 1 / 25
    assert beep == pytest.approx(1.0, abs=frame)  # the beep starts where it started
    assert end == pytest.approx(times[-1] + frame, abs=frame + 1024 / 48_000)  # and the sound ends with the picture
    streamcam.run(source, tmp_path / "silent.mp4", display=False, explainer=tiny, audio=False)
    assert video_facts(tmp_path / "silent.mp4")["audio"] == []


# --- live sources ------------------------------------------------------------------------------------


def test_a_live_recording_with_drops_plays_at_real_speed(tmp_path, monkeypatch):
    fake_cameras(monkeypatch, [80], fps=10)  # says 10 fps, delivers ~100 frames a second, then is unplugged
    monkeypatch.setattr(streamcam.sources, "LIVE_RECONNECT_S", 0.1)
    torch.manual_seed(0)
    slow = TinyGapNet().eval()
    slow.register_forward_hook(lambda *args: time.sleep(0.04))  # inference slower than the camera
    summary = streamcam.run(0, tmp_path / "live.mp4", display=False, model=slow, json=str(tmp_path / "r.jsonl"))
    assert summary.dropped > 0
    records = [json.loads(line)["time"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    out = video_facts(tmp_path / "live.mp4")["times"]
    assert len(out) == len(records) == summary.frames
    assert np.allclose(np.array(out) - out[0], np.array(records) - records[0], atol=1e-3)  # capture times
    assert out[-1] - out[0] == pytest.approx(0.8, abs=0.3)  # ~80 frames at ~100/s: real time, not frames / 10 fps
    assert out[-1] - out[0] < (len(out) - 1) / 10 * 0.9


# --- hard kills and browsers ----------------------------------------------------------------------


def plays_in_chromium(video: Path) -> dict:
    """Open ``video`` in headless Chromium's <video>: {"event": "loadeddata", "w": ..., "h": ...} or an error."""
    page = video.parent / f"{video.stem}-page.html"
    page.write_text(
        f'<!doctype html><video id="v" src="{video.name}" muted preload="auto"></video><pre id="r">pending</pre>'
        "<script>const v = document.getElementById('v'), r = document.getElementById('r');"
        "v.addEventListener('loadeddata', () => { r.textContent = JSON.stringify("
        "{event: 'loadeddata', w: v.videoWidth, h: v.videoHeight, d: v.duration}); });"
        "v.addEventListener('error', () => { r.textContent = JSON.stringify("
        "{event: 'error', message: v.error && v.error.message}); });</script>")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={video.parent / 'chromium-profile'}", "--allow-file-access-from-files",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    marker = '<pre id="r">'
    text = result.stdout[result.stdout.index(marker) + len(marker):].split("<", 1)[0] if marker in result.stdout else ""
    return json.loads(text) if text.startswith("{") else {"event": text or "nothing", "stderr": result.stderr[-500:]}


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")


@needs_chromium
def test_the_recording_plays_in_a_browser(tmp_path, tiny):
    source = make_clip(tmp_path / "in.mp4", [i / 25 for i in range(25)])
    streamcam.run(source, tmp_path / "out.mp4", display=False, explainer=tiny)
    played = plays_in_chromium(tmp_path / "out.mp4")
    assert played["event"] == "loadeddata" and (played["w"], played["h"]) == (320, 240), played
    assert played["d"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("kill_after", [pytest.param(40, marks=pytest.mark.slow), 120,
                                        pytest.param(250, marks=pytest.mark.slow)])
def test_a_hard_kill_leaves_a_file_that_plays(tmp_path, kill_after):
    """kill -9 at several moments: the .mp4 plays and holds every frame handed to it more than a fragment ago."""
    fps = 25
    make_clip(tmp_path / "long.mp4", [i / fps for i in range(900)], size=(320, 240))
    folder = tmp_path / f"kill-{kill_after}"
    folder.mkdir()
    process = start_streamcam("../long.mp4", "-o", "out.mp4", "--json", "-", "--batch", "2", "--backend", "torch",
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        records = [json.loads(process.stdout.readline()) for _ in range(kill_after)]
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    saved = video_facts(folder / "out.mp4")["times"]
    # at most a fragment (1 s), the encoder's queue (8) and x264's look-ahead behind what was handed over
    assert len(saved) >= kill_after - fps - 8 - 20, (kill_after, len(saved))
    assert np.allclose(saved, [r["time"] for r in records[: len(saved)]], atol=1e-6)  # the same frames, in order
    if CHROMIUM is not None:
        played = plays_in_chromium(folder / "out.mp4")
        assert played["event"] == "loadeddata" and played["w"] == 320, played


# --- network ------------------------------------------------------------------------------------------


def test_a_finite_http_file_is_read_once_to_its_end(tmp_path, tiny):
    make_clip(tmp_path / "clip.ts", [i / 25 for i in range(50)], size=(160, 120))
    with http_server(tmp_path) as address:
        started = time.monotonic()
        summary = streamcam.run(f"{address}/clip.ts", tmp_path / "out.mp4", display=False, explainer=tiny)
    assert summary.frames == 50 and summary.dropped == 0 and not summary.problems
    assert time.monotonic() - started < 60
    assert len(video_facts(tmp_path / "out.mp4")["times"]) == 50


# --- codecs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec, suffix, expected", [("hevc", ".mp4", "hevc"), ("av1", ".mkv", "av1"),
                                                      ("mjpeg", ".avi", "mjpeg"), (None, ".avi", "mjpeg")])
def test_other_codecs(tmp_path, tiny, codec, suffix, expected):
    source = make_clip(tmp_path / "in.mp4", [i / 25 for i in range(12)])
    options = {"codec": codec} if codec else {}
    streamcam.run(source, tmp_path / f"out{suffix}", display=False, explainer=tiny, **options)
    out = video_facts(tmp_path / f"out{suffix}")
    assert out["codec"] in (expected, {"av1": "libdav1d"}.get(expected)) and len(out["times"]) == 12


def test_quality_options_and_their_mistakes(tmp_path, tiny):
    source = make_clip(tmp_path / "in.mp4", [i / 25 for i in range(12)])
    sizes = {}
    for name, options in (("small", {"crf": 40}), ("big", {"crf": 10}), ("rate", {"bitrate": 200_000})):
        streamcam.run(source, tmp_path / f"{name}.mp4", display=False, explainer=tiny, **options)
        sizes[name] = (tmp_path / f"{name}.mp4").stat().st_size
    assert sizes["small"] < sizes["big"]
    for argv, fragment in ((["--codec", "vp9"], "invalid choice"), (["--crf", "99"], "--crf"),
                           (["--bitrate", "fast"], "bitrate"), (["--crf", "20", "--bitrate", "1M"], "not both")):
        result = streamcam_cli(str(source), "-o", str(tmp_path / "x.mp4"), *argv, timeout=120)
        assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_open_source_takes_a_single_path_or_string(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", [i / 25 for i in range(3)], size=(64, 48))
    for given in (clip, str(clip), [clip]):
        with streamcam.open_source(given) as source:
            assert source.info.source_id == str(clip) and source.info.frame_count == 3
    (opened,) = streamcam.sources.open_sources(str(clip))
    opened.close()


def test_open_sources_takes_a_single_webcam_index(monkeypatch):
    from conftest import fake_cameras

    fake_cameras(monkeypatch, [3])
    (camera,) = streamcam.sources.open_sources(webcams=0)
    with camera:
        assert camera.live and camera.info.source_id == "webcam:0"
