"""``streamcam batch --ray``: clips made from real photos, and a corrupt one, explained on a local Ray cluster of
2 CPUs give the local run's outputs bit for bit; resume; an actor killed mid-video is restarted and its video
explained again, completely; Ctrl-C kills the actors; an address nobody answers at, or a model no actor can load,
is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from streamcam.batch import BatchCommand, BatchProgress, expand_inputs, run_batch
from streamcam.batch.ray_runner import LOCAL_CLUSTER
from streamcam.batch.video import DONE, FAILED, SKIPPED
from streamcam.config import RunConfig
from streamcam.demo import photo

from conftest import (
    BATCH_CLIPS,
    CORRUPT_CLIP,
    assert_one_line_error,
    make_batch_clips,
    make_pan_video,
    read_video,
    run_cli,
)

ray = pytest.importorskip("ray")

from streamcam.ray import connect  # noqa: E402

pytestmark = pytest.mark.usefixtures("headless")

# --batch 1: every frame in a batch of its own in both runs compared, so their numbers are bit for bit the same.
RUN = ("--batch", "1", "--device", "cpu", "--backend", "torch", "--boxes")
OPTIONS = RunConfig(batch=1, device="cpu", backend="torch", boxes=True)  # RUN, in Python
GOOD = BATCH_CLIPS
ALL = [*GOOD, CORRUPT_CLIP]
LONG = 100  # frames of long.mp4
ACTOR_TITLE = b"ray::VideoActor"  # how Ray titles an actor's process (what ps shows)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """test_batch.py's clips (three from real photos, a corrupt one) and a longer one, long.mp4 (100 frames: long enough to be killed in the middle)."""
    folder = make_batch_clips(tmp_path_factory.mktemp("clips"))
    make_pan_video(folder / "long.mp4", fps=25.0, count=LONG, image=photo("coffee"))
    return folder


@pytest.fixture(scope="module")
def local_run(clips, tmp_path_factory) -> Path:
    """The same batch without Ray (one process, one Explainer), long.mp4 too: its OUT_DIR.

    With one torch thread, as each CPU actor has (Ray sets ``OMP_NUM_THREADS`` to the actor's ``num_cpus``):
    a convolution split over another number of threads adds in another order, and scores differ in their
    last digits.
    """
    import torch

    from streamcam.cli import main

    out = tmp_path_factory.mktemp("local") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["batch", *(str(clips / name) for name in [*ALL, "long.mp4"]), "-o", str(out), *RUN]) == 1
    finally:
        torch.set_num_threads(threads)
    return out


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def summary_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "summary.parquet").to_pylist()


def assert_same_outputs(out: Path, expected: Path, name: str, source: str | None = None) -> None:
    """``out``'s outputs for the video ``name`` are ``expected``'s: the same records (but for their ``source``,
    the input as named, when given), the same frames."""
    stem = Path(name).stem
    wanted = records(expected / f"{stem}.jsonl")
    assert records(out / f"{stem}.jsonl") == [record | {"source": source or record["source"]} for record in wanted]
    frames, fps = read_video(out / name)
    expected_frames, expected_fps = read_video(expected / name)
    assert len(frames) == len(expected_frames) > 0 and fps == expected_fps
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected_frames))


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def actor_processes() -> list[int]:
    """The processes of this test's video actors: descendants of this process (whose local cluster it is)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(ACTOR_TITLE) and \
                    _descends_from_us(int(entry.name)):
                found.append(int(entry.name))
        except OSError:  # ended meanwhile
            continue
    return found


def _descends_from_us(pid: int) -> bool:
    while pid > 1:
        if pid == os.getpid():
            return True
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # field 4: the parent
    return False


# --- before any cluster ----------------------------------------------------------------------------------------


def test_an_address_nobody_answers_at_is_one_line(clips, tmp_path, capsys):
    assert not ray.is_initialized()
    code, err = run_cli(capsys, "batch", str(clips / "cat.mp4"), "-o", str(tmp_path / "out"), *RUN,
                        "--ray", f"127.0.0.1:{free_port()}")
    assert_one_line_error(code, err, "cannot connect to a Ray cluster at 127.0.0.1:")
    assert not ray.is_initialized()
    assert not (tmp_path / "out" / "cat.mp4").exists()


# --- --ray alone: a local cluster started for the batch, and shut down after -----------------------------------


@pytest.fixture(scope="module")
def ray_run(clips, tmp_path_factory) -> tuple[Path, int, str]:
    """``streamcam batch a b c bad -o OUT --ray`` (a cluster of this machine, started and shut down by the
    command): (OUT_DIR, exit code, stderr)."""
    import contextlib
    import io

    from streamcam.cli import main

    out = tmp_path_factory.mktemp("ray") / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["batch", *(str(clips / name) for name in ALL), "-o", str(out), *RUN, "--ray"])
    return out, code, err.getvalue()


def test_on_ray_each_video_is_explained_as_the_local_run_explains_it(ray_run, local_run, clips):
    out, code, err = ray_run
    assert not ray.is_initialized()  # the cluster it started is shut down
    assert code == 1, err  # the corrupt video failed, the rest were done
    assert "with 2 Ray actors" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*GOOD, "cat.jsonl", "coffee.jsonl", "small.jsonl", "summary.parquet"])  # nothing half-written
    for name in GOOD:
        assert_same_outputs(out, local_run, name)
    rows, local_rows = summary_rows(out), summary_rows(local_run)[:len(ALL)]
    assert [row["input"] for row in rows] == [str(clips / name) for name in ALL]
    assert [row["status"] for row in rows] == [DONE, DONE, DONE, FAILED]
    for row, local in zip(rows, local_rows):
        figures = ("input", "status", "frames", "duration_s", "classes_seen", "error")
        assert {k: row[k] for k in figures} == {k: local[k] for k in figures}
        assert row["video"] == (None if local["video"] is None else str(out / Path(local["video"]).name))
    assert "broken.mp4" in rows[3]["error"] and "\n" not in rows[3]["error"]


# --- on a cluster this test started: the batch connects to it and leaves it running ----------------------------


@pytest.fixture(scope="module")
def cluster(ray_run) -> str:
    """A private local cluster of 2 CPUs (after ray_run, which starts and stops its own)."""
    address = connect(None, num_cpus=2, object_store_memory=300 * 2**20, log_to_driver=False)
    yield address
    ray.shutdown()


def test_resume_with_ray_skips_the_finished_videos(ray_run, cluster, clips, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(ray_run[0], out)
    finished = [p for p in out.iterdir() if p.name != "summary.parquet"]
    stamps = {path: path.stat().st_mtime_ns for path in finished}
    code, err = run_cli(capsys, "batch", *(str(clips / name) for name in ALL), "-o", str(out), *RUN, "--ray")
    assert code == 1, err
    assert ray.is_initialized()  # the cluster it found is left alone
    assert {path: path.stat().st_mtime_ns for path in finished} == stamps  # not written again
    assert [row["status"] for row in summary_rows(out)] == [SKIPPED, SKIPPED, SKIPPED, FAILED]
    assert "with 1 Ray actors" in err  # only the corrupt video was left to explain
    assert "3 skipped" in err and "1 failed" in err


def test_an_actor_killed_mid_video_is_restarted_and_the_video_explained_again(cluster, clips, local_run, tmp_path,
                                                                              capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names, as typed: the actors, whose working folder is Ray's, are given
    out = Path("out")            # absolute ones, and the summary says them as typed
    clip = os.path.relpath(clips / "long.mp4")
    killed, counted = [], []
    advance = BatchProgress.advance

    def kill_the_actor_once(bar, frames=1):  # in the driver: the actor reported its first frames
        counted.append(frames)
        if not killed:
            [pid] = actor_processes()  # one video, one actor
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            assert not (out / "long.mp4").exists() and not (out / "long.jsonl").exists()
        advance(bar, frames)

    monkeypatch.setattr(BatchProgress, "advance", kill_the_actor_once)
    code, err = run_cli(capsys, "batch", clip, "-o", str(out), *RUN, "--ray")
    assert code == 0, err
    assert killed, "the actor reported frames"
    assert "the Ray actor explaining" in err and "Ray explains it again (attempt 2)" in err
    assert sum(counted) == LONG  # the bar: the frames the dead attempt explained counted once, not again
    assert sorted(p.name for p in out.iterdir()) == ["long.jsonl", "long.mp4", "summary.parquet"]  # no staging
    assert_same_outputs(out, local_run, "long.mp4", source=clip)
    [row] = summary_rows(out)
    assert row["status"] == DONE and row["frames"] == LONG
    assert (row["input"], row["video"], row["records"]) == (clip, "out/long.mp4", "out/long.jsonl")


def test_ctrl_c_kills_the_actors_and_the_summary_lists_the_videos_that_ended(cluster, clips, tmp_path, monkeypatch):
    out = tmp_path / "out"
    video_done = BatchProgress.video_done

    def interrupt_after_the_first(bar, row):  # Ctrl-C in the driver once one video ended, the other not
        video_done(bar, row)
        raise KeyboardInterrupt

    monkeypatch.setattr(BatchProgress, "video_done", interrupt_after_the_first)
    jobs = expand_inputs([str(clips / name) for name in ("long.mp4", "cat.mp4")])
    with pytest.raises(KeyboardInterrupt):
        run_batch(BatchCommand(output=str(out), ray=LOCAL_CLUSTER), jobs, OPTIONS)
    deadline = time.monotonic() + 20
    while actor_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert actor_processes() == []
    assert ray.is_initialized()
    [row] = summary_rows(out)  # the video that ended (either: the actors load the model at their own pace)
    ended = Path(row["input"])
    assert row["status"] == DONE and row["frames"] == {"cat.mp4": 7, "long.mp4": LONG}[ended.name]
    assert len(records(out / f"{ended.stem}.jsonl")) == len(read_video(out / ended.name)[0]) == row["frames"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
           sorted([ended.name, f"{ended.stem}.jsonl", "summary.parquet"])  # the other: nothing under a final name


def test_a_model_no_actor_can_load_is_one_line(cluster, clips, tmp_path, capsys):
    code, err = run_cli(capsys, "batch", str(clips / "cat.mp4"), "-o", str(tmp_path / "out"), *RUN, "--ray",
                        "--layer", "no_such_layer")
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and "Traceback" not in err, err
    assert len(errors) == 1 and errors[0].startswith("streamcam: error: no Ray actor could load the model: "), err
    assert "no_such_layer" in errors[0]
