"""streamcam doctor: the CPU rows pass here, GPU rows say why they cannot run, the comparison can fail,
the exit code follows the verdicts, and ``doctor --help`` answers before torch loads."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import streamcam
from streamcam import video_in, video_out
from streamcam.cli import main
from streamcam.doctor import FAIL, PASS, UNAVAILABLE, Report, Row, exit_code
from streamcam.doctor import engines, pipeline
from streamcam.types import Explanation

from conftest import make_tiny_explainer, run_fresh

CPU_ROWS = {"torch cpu fp32", "torch cpu fp16", "torch cpu bf16", "onnxruntime cpu fp32", "onnxruntime cpu fp16",
            "libx264 + software decoding"}
NAMES = ("chelsea", "coffee")


@pytest.fixture(scope="module")
def doctor_run() -> tuple[int, dict, str]:
    """One real ``streamcam doctor --quick --json -`` in this process: exit code, JSON report, table."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["doctor", "--quick", "--json", "-"])
    return code, json.loads(out.getvalue()), err.getvalue()


def test_every_cpu_row_passes_here(doctor_run):
    code, report, table = doctor_run
    rows = {row["name"]: row for row in report["rows"]}
    assert CPU_ROWS <= set(rows)
    assert all(rows[name]["verdict"] == PASS for name in CPU_ROWS), table
    assert code == 0 and report["exit_code"] == 0
    assert rows["torch cpu fp32"]["measured"]["classes"] == ["Egyptian cat", "espresso"]
    assert rows["onnxruntime cpu fp32"]["measured"]["max_score_diff"] <= 1e-3
    assert all(rows[name]["measured"]["images_per_s"] > 0 for name in CPU_ROWS - {"libx264 + software decoding"})
    assert rows["libx264 + software decoding"]["measured"]["frames"] == 8
    assert "all available checks pass" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU rows run on a GPU")
def test_gpu_rows_are_listed_as_not_available_with_a_reason(doctor_run):
    _, report, table = doctor_run
    rows = {row["name"]: row for row in report["rows"]}
    gpu = [row for row in report["rows"] if "cuda" in row["name"] or "nvenc" in row["name"] or "NVDEC" in row["name"]]
    names = {row["name"] for row in gpu}
    assert {"torch cuda fp32", "torch cuda fp16", "torch cuda bf16", "onnxruntime cuda fp32",
            "onnxruntime+TensorRT cuda fp16", "h264_nvenc + software decoding"} <= names
    assert all(row["verdict"] == UNAVAILABLE and row["reason"] for row in gpu)
    assert "no CUDA device" in rows["torch cuda fp32"]["reason"] or "without CUDA" in rows["torch cuda fp32"]["reason"]
    assert "not available here: " in table


def test_json_report_has_versions_devices_and_rows(doctor_run):
    _, report, _ = doctor_run
    versions = report["versions"]
    assert versions["streamcam"] == streamcam.__version__ and versions["torch"] == torch.__version__
    assert {"cuda", "cudnn", "onnxruntime_providers", "tensorrt", "pyav", "ffmpeg", "opencv"} <= set(versions)
    assert "libavcodec" in versions["ffmpeg"] and "h264_nvenc" in versions["ffmpeg_hardware"]["encoders"]
    assert report["devices"][0]["device"] == "cpu"
    assert all(row["verdict"] in (PASS, FAIL, UNAVAILABLE) for row in report["rows"])


# --- the comparison and the verdicts, with injected engine results ---

def explanation(class_ids: list[int], scores: list[float], maps: torch.Tensor, engine: str = "torch") -> Explanation:
    return Explanation(class_ids=torch.tensor(class_ids).view(-1, 1), scores=torch.tensor(scores).view(-1, 1),
                       labels=[[f"class {i}"] for i in class_ids], maps=maps, method="cam", layer="x", engine=engine)


@pytest.fixture
def reference() -> Explanation:
    maps = torch.linspace(0, 1, 2 * 49).view(2, 1, 7, 7)
    return explanation([285, 967], [0.79, 0.90], maps)


def check_with(monkeypatch, spec: engines.EngineSpec, result: Explanation | Exception, reference) -> Row:
    """check_engine with the explainer replaced by one that returns ``result`` (or raises it)."""

    def fake_explainer(frames):
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(engines, "build_explainer", lambda _spec: fake_explainer)
    frames = [np.zeros((8, 8, 3), np.uint8)] * 2
    return engines.check_engine(spec, frames, NAMES, reference, seconds=0.0, batch_size=2)


FP32 = engines.EngineSpec("onnxruntime", "cpu", "fp32")
BF16 = engines.EngineSpec("torch", "cpu", "bf16")


def test_an_identical_result_passes(monkeypatch, reference):
    row = check_with(monkeypatch, FP32, replace(reference, engine="onnxruntime"), reference)
    assert row.verdict == PASS and row.measured["max_score_diff"] == 0 and row.measured["min_map_correlation"] == 1


@pytest.mark.parametrize("wrong, spec, says", [
    (lambda r: replace(r, class_ids=r.class_ids.flip(0), labels=r.labels[::-1]), BF16, "chelsea: top-1 is 'class 967'"),
    (lambda r: replace(r, scores=r.scores + 2e-3), FP32, "top-1 scores differ by up to 0.002 (bound 0.001)"),
    (lambda r: replace(r, scores=r.scores - 0.15), BF16, "(bound 0.1)"),
    (lambda r: replace(r, maps=r.maps.flip(-1)), BF16, "map correlation down to"),
    (lambda r: replace(r, maps=torch.zeros_like(r.maps)), FP32, "map correlation down to 0.0000"),
    (lambda r: replace(r, engine="onnxruntime"), engines.EngineSpec("torch", "cpu", "fp16"), "ran on onnxruntime"),
])
def test_a_wrong_result_fails_its_row(monkeypatch, reference, wrong, spec, says):
    result = wrong(replace(reference, engine=spec.engine))
    row = check_with(monkeypatch, spec, result, reference)
    assert row.verdict == FAIL and says in row.reason, row.reason
    assert exit_code([Row("engine", "torch cpu fp32", PASS), row]) == 1


def test_low_precision_gets_its_looser_bound(monkeypatch, reference):
    drift = replace(reference, scores=reference.scores + 0.04)  # bf16 drifts by up to 4.3e-2 on real photos
    assert check_with(monkeypatch, BF16, drift, reference).verdict == PASS
    assert check_with(monkeypatch, engines.EngineSpec("torch", "cpu", "fp16"), drift, reference).verdict == FAIL


def test_the_reference_must_know_the_cat_and_the_espresso(monkeypatch, reference):
    row = check_with(monkeypatch, engines.EngineSpec(*engines.REFERENCE), reference, reference)
    assert row.verdict == FAIL and "chelsea: top-1 is 'class 285', expected 'Egyptian cat'" in row.reason


def test_an_engine_that_raises_fails_with_its_message(monkeypatch, reference):
    row = check_with(monkeypatch, FP32, RuntimeError("CUDA error: an illegal memory access"), reference)
    assert row.verdict == FAIL and row.reason == "RuntimeError: CUDA error: an illegal memory access"


def test_an_unavailable_row_is_not_run(monkeypatch, reference):
    spec = engines.EngineSpec("torch", "cuda", "fp16", "no CUDA device found")
    row = check_with(monkeypatch, spec, AssertionError("must not run"), reference)
    assert (row.verdict, row.reason) == (UNAVAILABLE, "no CUDA device found")


def test_exit_code_follows_the_rows():
    ok, bad, absent = (Row("engine", "a", PASS), Row("engine", "b", FAIL, "x"), Row("engine", "c", UNAVAILABLE, "y"))
    assert exit_code([ok, absent]) == 0
    assert exit_code([ok, bad, absent]) == 1
    assert exit_code([absent]) == 1  # nothing could run: nothing is proven


def test_a_failed_row_makes_the_command_fail(monkeypatch, capsys):
    from streamcam import doctor

    report = Report({}, [], [Row("engine", "torch cpu fp32", PASS), Row("engine", "torch cpu bf16", FAIL, "broken")])
    monkeypatch.setattr(doctor, "diagnose", lambda quick: report)
    monkeypatch.setattr("streamcam.doctor.table.format_report", lambda r: "\n".join(f"{x.name}: {x.verdict}" for x in r.rows))
    assert main(["doctor", "--quick"]) == 1
    assert "torch cpu bf16: FAIL" in capsys.readouterr().out


# --- the pipeline rows, on a tiny model ---

@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return pipeline.make_clip(tmp_path_factory.mktemp("doctor") / "clip.mp4", 6)


def test_the_pipeline_row_checks_the_frame_count(clip, tmp_path):
    ex = make_tiny_explainer(backend="torch")
    spec = pipeline.PipelineSpec("h264", "libx264", pipeline.SOFTWARE)
    good = pipeline.check_pipeline(spec, clip, 6, ex, tmp_path)
    assert good.verdict == PASS and good.measured["frames"] == 6 and good.measured["encoder"] == ["libx264"]
    bad = pipeline.check_pipeline(spec, clip, 7, ex, tmp_path)
    assert bad.verdict == FAIL and "frame count is 6, expected 7" in bad.reason


def test_a_pinned_encoder_does_not_fall_back_and_is_restored(clip, tmp_path):
    codecs, decoding = dict(video_out.CODECS), video_in._cuda_decoding
    ex = make_tiny_explainer(backend="torch")
    spec = pipeline.PipelineSpec("hevc", "no_such_encoder", pipeline.SOFTWARE)
    row = pipeline.check_pipeline(spec, clip, 6, ex, tmp_path)
    assert row.verdict == FAIL and "no_such_encoder" in row.reason
    assert video_out.CODECS == codecs and video_in._cuda_decoding is decoding


# --- start-up and usage ---

def test_doctor_help_needs_no_torch(tmp_path):
    code, heavy, _, out = run_fresh(["doctor", "--help"], tmp_path)
    assert code == 0 and heavy == [] and "streamcam doctor" in out


@pytest.mark.parametrize("args, says", [(["doctor", "--bogus"], "unrecognized arguments: --bogus"),
                                        (["doctor", "--json", "/proc/streamcam/r.json"], "cannot write")])
def test_bad_usage_is_one_line_and_exit_2_before_torch(tmp_path, args, says):
    code, heavy, err, _ = run_fresh(args, tmp_path)
    assert code == 2 and heavy == [] and says in err and len(err.strip().splitlines()) == 1, err


def test_an_existing_report_is_not_replaced_unasked(tmp_path):
    (tmp_path / "report.json").write_text("last week's report")
    code, heavy, err, _ = run_fresh(["doctor", "--json", "report.json"], tmp_path)
    assert code == 2 and heavy == [] and "already exists" in err and "--overwrite" in err, err
    assert (tmp_path / "report.json").read_text() == "last week's report"


def test_the_report_file_is_written_whole(tmp_path, monkeypatch):
    from streamcam.atomic import write_whole

    target = tmp_path / "report.json"
    target.write_text("old")
    write_whole(target, '{"rows": []}\n', replace=True)
    assert target.read_text() == '{"rows": []}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left beside it
