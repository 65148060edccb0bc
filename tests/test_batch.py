"""``streamcam batch``: a collection of clips made from real photos explained as plain runs explain them,
a corrupt one reported without stopping the rest, resume, leftovers of a killed run, list files and folders,
files read through pyarrow's file systems, names that clash, Ctrl-C, and the summary's schema."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamcam.batch import BatchCommand, BatchProgress, expand_inputs, explain_video, run_batch
from streamcam.batch.inputs import FILE, REMOTE, STREAM
from streamcam.batch.outdir import STAGING_PREFIX
from streamcam.batch.video import DONE, FAILED, SKIPPED
from streamcam.config import RunConfig

from conftest import (
    BATCH_CLIPS,
    CORRUPT_CLIP,
    TinyGapNet,
    assert_one_line_error,
    make_batch_clips,
    make_pan_video,
    make_tiny_explainer,
    read_video,
    run_cli,
    run_fresh,
    start_streamcam,
)

pytestmark = pytest.mark.usefixtures("headless")

# The summary's columns, as documented in README ("A whole collection").
SCHEMA = [("input", pa.string()), ("video", pa.string()), ("records", pa.string()), ("status", pa.string()),
          ("frames", pa.int64()), ("duration_s", pa.float64()), ("classes_seen", pa.list_(pa.string())),
          ("seconds", pa.float64()), ("error", pa.string())]
# --batch 1: every frame in a batch of its own in both runs compared, so their numbers are bit for bit the same.
RUN = ("--batch", "1", "--device", "cpu", "--backend", "torch", "--boxes")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Three clips from real photos (two containers, two sizes, three frame rates) and a corrupt one."""
    return make_batch_clips(tmp_path_factory.mktemp("clips"))


GOOD = BATCH_CLIPS
ALL = [*GOOD, CORRUPT_CLIP]


@pytest.fixture(scope="module")
def batch_run(clips, tmp_path_factory) -> tuple[Path, int]:
    """``streamcam batch`` over the four clips, once for the module: (OUT_DIR, exit code)."""
    from streamcam.cli import main

    out = tmp_path_factory.mktemp("batch") / "out"
    code = main(["batch", *(str(clips / name) for name in ALL), "-o", str(out), *RUN])
    return out, code


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def summary_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "summary.parquet").to_pylist()


def test_each_video_is_explained_as_a_plain_run_explains_it(clips, batch_run, tmp_path, capsys):
    out, code = batch_run
    assert code == 1  # one video failed: the batch says so, and did the rest
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*GOOD, "cat.jsonl", "coffee.jsonl", "small.jsonl", "summary.parquet"])  # no staging folder left
    # The plain runs, in one command (side by side, each frame still in a batch of its own).
    code_plain, err = run_cli(capsys, *(str(clips / name) for name in GOOD), "--json", str(tmp_path / "{source}.jsonl"),
                              "--no-display", *RUN)
    assert code_plain == 0, err
    for name in GOOD:
        clip = clips / name
        frames_in, fps_in = read_video(clip)
        frames_out, fps_out = read_video(out / name)
        assert len(frames_out) == len(frames_in)
        assert frames_out[0].shape == frames_in[0].shape
        assert fps_out == pytest.approx(fps_in, rel=1e-3)
        batch_records = records(out / f"{clip.stem}.jsonl")
        assert batch_records == records(tmp_path / f"{clip.stem}.jsonl")  # same frames, times, classes, scores, boxes
        assert len(batch_records) == len(frames_in)


def test_summary_has_one_row_per_video_in_a_fixed_schema(clips, batch_run):
    out, _ = batch_run
    table = pq.read_table(out / "summary.parquet")
    assert [(f.name, f.type) for f in table.schema] == SCHEMA
    rows = table.to_pylist()
    assert [row["input"] for row in rows] == [str(clips / name) for name in ALL]
    assert [row["status"] for row in rows] == [DONE, DONE, DONE, FAILED]
    expected = {"cat.mp4": (7, 29.97, "Egyptian cat"), "coffee.mp4": (6, 25.0, "espresso"),
                "small.avi": (5, 24.0, "Egyptian cat")}
    for row in rows[:3]:
        name = Path(row["input"]).name
        frames, fps, label = expected[name]
        assert row["video"] == str(out / name) and row["records"] == str(out / (Path(name).stem + ".jsonl"))
        assert row["frames"] == frames
        assert row["duration_s"] == pytest.approx(frames / fps, rel=1e-3)
        assert label in row["classes_seen"]
        assert row["seconds"] > 0 and row["error"] is None
    broken = rows[3]
    assert broken["video"] is None and broken["records"] is None and broken["frames"] == 0
    assert "broken.mp4" in broken["error"] and "\n" not in broken["error"]


def test_rerunning_skips_the_finished_videos(clips, batch_run, capsys):
    out, _ = batch_run
    finished = [out / name for name in GOOD] + [out / f"{Path(name).stem}.jsonl" for name in GOOD]
    stamps = {path: path.stat().st_mtime_ns for path in finished}
    before = {row["input"]: row for row in summary_rows(out)}
    code, err = run_cli(capsys, "batch", *(str(clips / name) for name in ALL), "-o", str(out), *RUN)
    assert code == 1, err
    assert {path: path.stat().st_mtime_ns for path in finished} == stamps  # not written again
    rows = summary_rows(out)
    assert [row["status"] for row in rows] == [SKIPPED, SKIPPED, SKIPPED, FAILED]  # the corrupt one is retried
    for row in rows[:3]:  # the earlier summary's figures
        assert {k: row[k] for k in ("frames", "duration_s", "classes_seen", "seconds")} == \
               {k: before[row["input"]][k] for k in ("frames", "duration_s", "classes_seen", "seconds")}
    assert "3 skipped" in err and "1 failed" in err


def test_without_the_earlier_summary_a_skipped_row_is_read_from_its_records(clips, batch_run, tmp_path, capsys):
    out, _ = batch_run
    copy = tmp_path / "out"
    copy.mkdir()
    for name in ("cat.mp4", "cat.jsonl"):
        (copy / name).write_bytes((out / name).read_bytes())
    code, err = run_cli(capsys, "batch", str(clips / "cat.mp4"), "-o", str(copy), *RUN)
    assert code == 0, err
    [row] = summary_rows(copy)
    assert row["status"] == SKIPPED and row["frames"] == 7 and row["classes_seen"] == ["Egyptian cat"]
    assert row["duration_s"] == pytest.approx(7 / 29.97, rel=1e-3)


# --- the library: one Explainer, videos one by one --------------------------------------------------------------


@pytest.fixture
def tiny_options() -> RunConfig:
    return RunConfig(model=TinyGapNet(), device="cpu", batch=1)


def test_leftovers_of_a_killed_run_do_not_count_as_done(clips, tmp_path, tiny_options):
    out = tmp_path / "out"
    staged = out / f"{STAGING_PREFIX}dead{'.partial'}"
    staged.mkdir(parents=True)
    (staged / "cat.mp4").write_bytes(b"half a video")  # what kill -9 leaves: only staging names
    (staged / "cat.jsonl").write_text('{"frame": 0}\n')
    jobs = expand_inputs([str(clips / "cat.mp4")])
    [row] = run_batch(BatchCommand(output=str(out)), jobs, tiny_options)
    assert row.status == DONE and row.frames == 7
    assert not staged.exists()
    assert len(read_video(out / "cat.mp4")[0]) == 7 and len(records(out / "cat.jsonl")) == 7


def test_overwrite_explains_finished_videos_again(clips, tmp_path, tiny_options):
    out = tmp_path / "out"
    jobs = expand_inputs([str(clips / "cat.mp4")])
    run_batch(BatchCommand(output=str(out)), jobs, tiny_options)
    [row] = run_batch(BatchCommand(output=str(out), overwrite=True), jobs, replace(tiny_options, top_k=2))
    assert row.status == DONE
    assert [len(r["predictions"]) for r in records(out / "cat.jsonl")] == [2] * 7  # the new run's records
    assert len(read_video(out / "cat.mp4")[0]) == 7 and not list(out.glob(".*"))


def test_ray_goes_to_its_hook_with_the_videos_to_explain_and_the_bar(clips, tmp_path, tiny_options, monkeypatch):
    import streamcam.batch.ray_runner

    out = tmp_path / "out"
    jobs = expand_inputs([str(clips / name) for name in ("cat.mp4", "coffee.mp4")])
    run_batch(BatchCommand(output=str(out)), jobs[:1], tiny_options)  # cat.mp4 complete: not the hook's
    calls = []

    def hook(todo, out_dir, options, address, bar):  # as the Ray runner will: explain_video, feeding the bar
        calls.append(([job.name for job in todo], out_dir, options, address))
        explainer = make_tiny_explainer()
        rows = [explain_video(job, out_dir, explainer, options, bar.advance) for job in todo]
        for row in rows:
            bar.video_done(row)
        return rows

    monkeypatch.setattr(streamcam.batch.ray_runner, "run_on_ray", hook)
    rows = run_batch(BatchCommand(output=str(out), ray="auto"), jobs, tiny_options)
    assert calls == [(["coffee.mp4"], out, tiny_options, "auto")]
    assert [(row.status, row.frames) for row in rows] == [(SKIPPED, 7), (DONE, 6)]


def test_ctrl_c_stops_the_batch_leaving_only_complete_outputs(clips, tmp_path, tiny_options, monkeypatch):
    out = tmp_path / "out"
    advance = BatchProgress.advance

    def interrupted(self, frames=1):
        advance(self, frames)
        if self.frames == 10:  # the second video's third frame
            raise KeyboardInterrupt

    monkeypatch.setattr(BatchProgress, "advance", interrupted)
    jobs = expand_inputs([str(clips / name) for name in GOOD])
    with pytest.raises(KeyboardInterrupt):
        run_batch(BatchCommand(output=str(out)), jobs, tiny_options)
    assert sorted(p.name for p in out.iterdir()) == ["cat.jsonl", "cat.mp4", "summary.parquet"]
    assert [row["status"] for row in summary_rows(out)] == [DONE]  # the summary lists what ended
    assert len(read_video(out / "cat.mp4")[0]) == 7


def test_a_file_read_through_pyarrow_gives_the_records_of_the_local_file(clips, tmp_path):
    explainer = make_tiny_explainer()
    options = RunConfig(device="cpu", batch=1)
    local, remote = (tmp_path / "local", tmp_path / "remote")
    for folder in (local, remote):
        folder.mkdir()
    [job] = expand_inputs([str(clips / "coffee.mp4")])
    [url_job] = expand_inputs([(clips / "coffee.mp4").as_uri()])
    assert (job.kind, url_job.kind, url_job.name) == (FILE, REMOTE, "coffee.mp4")
    row = explain_video(job, local, explainer, options)
    url_row = explain_video(url_job, remote, explainer, options)
    assert row.status == url_row.status == DONE and row.frames == url_row.frames == 6
    def without_source(path: Path) -> list[dict]:
        return [{k: v for k, v in record.items() if k != "source"} for record in records(path)]

    assert without_source(remote / "coffee.jsonl") == without_source(local / "coffee.jsonl")
    assert records(remote / "coffee.jsonl")[0]["source"] == url_job.target
    missing = explain_video(replace(url_job, target=url_job.target + ".gone"), remote, explainer, options)
    assert missing.status == FAILED and "no such file" in missing.error


def test_inputs_folders_and_list_files_expand_in_order_each_video_once(clips, tmp_path):
    folder = tmp_path / "more"
    folder.mkdir()
    for name in ("b.mkv", "a.webm"):
        (folder / name).write_bytes(b"")
    (folder / "notes.txt").write_text("not a list: folders give their videos only")
    (folder / "deeper").mkdir()
    (folder / "deeper" / "c.mp4").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my clips\n\n  more/b.mkv\n{clips / 'cat.mp4'}\nhttps://example.com/v/clip%201.mov?x=1\n"
                       "s3://bucket/videos/d.ts\n")
    jobs = expand_inputs([str(clips / "cat.mp4"), str(folder), str(listing), str(clips / ".." / clips.name / "cat.mp4")])
    assert [(Path(j.target).name if j.kind == FILE else j.target, j.kind, j.name) for j in jobs] == [
        ("cat.mp4", FILE, "cat.mp4"),
        ("a.webm", FILE, "a.mp4"),  # a container streamcam does not write: .mp4
        ("b.mkv", FILE, "b.mkv"),
        ("https://example.com/v/clip%201.mov?x=1", STREAM, "clip_1.mov"),
        ("s3://bucket/videos/d.ts", REMOTE, "d.mp4"),
    ]  # the list's more/b.mkv (relative to the list) and cat.mp4, and cat.mp4 spelled otherwise: once each


def test_a_list_file_and_a_folder_on_the_command_line(clips, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "small.avi").write_bytes((clips / "small.avi").read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text(f"{clips / 'coffee.mp4'}\n# done later\n")
    out = tmp_path / "out"
    code, err = run_cli(capsys, "batch", str(listing), str(folder), "-o", str(out), "--model", "resnet18",
                        "--weights", "random", "--device", "cpu", "--backend", "torch")
    assert code == 0, err
    rows = summary_rows(out)
    assert [(Path(r["input"]).name, r["status"], r["frames"]) for r in rows] == [("coffee.mp4", DONE, 6),
                                                                                 ("small.avi", DONE, 5)]
    assert "2 videos: 2 done, 0 skipped (complete already), 0 failed; 11 frames" in err


def test_complete_outputs_whose_records_are_damaged_are_explained_again(clips, tmp_path, tiny_options):
    out = tmp_path / "out"
    [job] = expand_inputs([str(clips / "cat.mp4")])
    run_batch(BatchCommand(output=str(out)), [job], tiny_options)
    (out / "summary.parquet").unlink()  # no earlier figures: the records file is read back
    (out / "cat.jsonl").write_text("{not json\n")
    [row] = run_batch(BatchCommand(output=str(out)), [job], tiny_options)
    assert row.status == DONE and len(records(out / "cat.jsonl")) == 7


def test_the_progress_bar_counts_frames_and_videos_and_corrects_its_total(clips, capsys):
    from streamcam.batch.progress import announced_frames
    from streamcam.batch.video import VideoResult

    jobs = expand_inputs([str(clips / name) for name in ALL] + ["https://example.com/live.mp4"])
    expected = {job.target: announced_frames(job) for job in jobs}
    assert list(expected.values()) == [7, 6, 5, None, None]  # headers read; none for a corrupt file or a URL
    with BatchProgress(expected, enabled=True) as bar:
        assert bar.total == 18
        bar.advance(4)
        bar.advance(3)
        bar.video_done(VideoResult(jobs[0].target, "o/cat.mp4", "o/cat.jsonl", DONE, frames=7))
        bar.video_done(VideoResult(jobs[3].target, None, None, FAILED, error="corrupt"))
        bar.advance(6)  # coffee.mp4, whose header said 6, but say it had 4 more
        bar.advance(4)
        bar.video_done(VideoResult(jobs[1].target, "o/coffee.mp4", "o/coffee.jsonl", DONE, frames=10))
        assert (bar.frames, bar.total, bar.done, bar.failed) == (17, 22, 3, 1)  # small.avi's 5 still to come
    err = capsys.readouterr().err
    assert "videos 3/5, 1 failed" in err and "17/22" in err


# --- refused before anything runs --------------------------------------------------------------------------------


def test_two_inputs_writing_one_name_are_refused_before_anything_runs(clips, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "cat.mkv").write_bytes((clips / "cat.mp4").read_bytes())
    out = tmp_path / "out"
    code, err = run_cli(capsys, "batch", str(clips / "cat.mp4"), str(other / "cat.mkv"), "-o", str(out))
    assert_one_line_error(code, err, "cat.mp4", "cat.mkv", "would both write", "cat.jsonl")
    assert not out.exists()


def test_half_an_output_pair_is_not_replaced_unasked(clips, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cat.mp4").write_bytes(b"someone's own video")
    code, err = run_cli(capsys, "batch", str(clips / "cat.mp4"), "-o", str(out))
    assert_one_line_error(code, err, "cat.mp4 is there without cat.jsonl", "--overwrite")
    assert (out / "cat.mp4").read_bytes() == b"someone's own video"


def test_a_second_batch_into_the_same_folder_is_refused(clips, tmp_path, capsys):
    from streamcam.batch.outdir import batch_lock

    out = tmp_path / "out"
    with batch_lock(out):  # another batch, writing
        code, err = run_cli(capsys, "batch", str(clips / "cat.mp4"), "-o", str(out))
    assert_one_line_error(code, err, "another streamcam batch is writing into")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("missing,flags,extra", [("pyarrow", [], "batch"), ("ray", ["--ray"], "ray")])
def test_without_its_extra_one_line_names_the_pip_install(missing, flags, extra, clips, tmp_path, capsys, monkeypatch):
    import importlib.util

    import streamcam.batch.command

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(streamcam.batch.command.importlib.util, "find_spec",
                        lambda name, *args: None if name == missing else find_spec(name, *args))
    code, err = run_cli(capsys, "batch", str(clips / "cat.mp4"), "-o", str(tmp_path / "out"), *flags)
    assert_one_line_error(code, err, f"pip install 'streamcam[{extra}]'")
    assert not (tmp_path / "out").exists()


def test_a_signal_stops_the_batch_with_only_complete_outputs_and_their_summary(clips, tmp_path):
    """The real command and a real SIGINT while the second video is being explained."""
    import signal
    import time

    long = make_pan_video(tmp_path / "long.mp4", count=600, size=(160, 120))
    out = tmp_path / "out"
    process = start_streamcam("batch", str(clips / "cat.mp4"), str(long), "-o", str(out), "--model", "resnet18",
                              "--weights", "random", "--device", "cpu", "--backend", "torch",
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".streamcam-batch-*/*long*")):  # long.mp4 is being explained
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert sorted(p.name for p in out.iterdir()) == ["cat.jsonl", "cat.mp4", "summary.parquet"]
    assert [(Path(r["input"]).name, r["status"]) for r in summary_rows(out)] == [("cat.mp4", DONE)]
    assert "Traceback" not in err and "run the same command again to resume" in err


def test_batch_help_needs_no_torch(tmp_path):
    code, heavy, _, out = run_fresh(["batch", "--help"], tmp_path)
    assert code == 0 and heavy == [] and "OUT_DIR" in out


USAGE_ERRORS = [
    (["batch", "in.mp4"], "give the output folder"),
    (["batch", "-o", "out"], "nothing to explain"),
    (["batch", "in.mp4", "-o", "in.mp4"], "in.mp4 is a file"),
    (["batch", ".", "-o", "out"], "is inside the input folder"),
    (["batch", "ftp://host/a.mp4", "-o", "out"], "unsupported URL scheme"),
    (["batch", "missing.txt", "-o", "out"], "no such list file"),
    (["batch", "in.mp4", "-o", "out", "--model", "resnet5O"], "Did you mean resnet50"),
    (["batch", "in.mp4", "-o", "out", "--top-k", "0"], "--top-k must be at least 1"),
    (["batch", "in.mp4", "-o", "out", "--json", "x.jsonl"], "unrecognized arguments: --json"),
]


@pytest.mark.parametrize("args,fragment", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_answer_before_torch_loads(args, fragment, tmp_path):
    make_pan_video(tmp_path / "in.mp4", count=2)
    code, heavy, err, _ = run_fresh(args, tmp_path)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("streamcam: error:") and fragment in lines[0], err
    assert heavy == [], f"{args} imported {heavy} before refusing"
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]  # nothing created
