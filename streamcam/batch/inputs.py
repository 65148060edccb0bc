"""``streamcam batch``'s INPUTS -> an ordered, de-duplicated list of :class:`VideoJob`, and the names they write.

An input is a video file; a folder (its video files, sorted by name, not its
subfolders); a ``.txt`` list file (one path or URL a line; blank lines and ``#``
comments skipped; relative paths are relative to the list file's folder); or a
URL: ``http(s)://``, ``rtsp://``... go to FFmpeg as in a normal run, other
schemes (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``) are read
through pyarrow's file systems (:mod:`streamcam.batch.remote`).

Each job writes ``OUT_DIR/NAME`` (the input's file name; ``.mp4`` where its
container is not one streamcam writes) and ``OUT_DIR/STEM.jsonl``. Refused with
one line before anything runs: two inputs that would write the same names, and
an output that is an input (or an output folder inside an input folder). A file
that is missing or not a video is NOT refused here: it becomes its own failed
row, and the batch goes on. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import InputError
from ..identity import FileId, FileSet, identify
from ..plan import check_writable_folder, model_files
from ..sources import NETWORK_SCHEMES
from ..video_out import CONTAINERS

log = logging.getLogger(__name__)

# What a folder contributes (its other files are skipped): the usual video containers FFmpeg reads.
VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .avi .webm .mpg .mpeg .ts .mts .m2ts .flv .wmv .3gp .ogv .mxf .dv".split())
LIST_SUFFIX = ".txt"
# Read through pyarrow.fs.FileSystem.from_uri (the schemes it knows); FFmpeg's own go to FFmpeg.
REMOTE_SCHEMES = frozenset({"file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})
DEFAULT_SUFFIX = ".mp4"  # for an input whose container streamcam does not write (.webm, .ts, a URL...)
RECORDS_SUFFIX = ".jsonl"
SUMMARY_NAME = "summary.parquet"

FILE, STREAM, REMOTE = "file", "stream", "remote"  # VideoJob.kind


@dataclass(frozen=True)
class VideoJob:
    """One video of a batch: where it is read from and the names of what it writes."""

    target: str  # a path (as named, or folder/NAME, or resolved from a list file) or a URL
    kind: str  # FILE (a local path), STREAM (a URL FFmpeg opens), REMOTE (through pyarrow's file systems)
    name: str  # the annotated video's file name in OUT_DIR, e.g. "clip.mp4"

    @property
    def records_name(self) -> str:
        return Path(self.name).stem + RECORDS_SUFFIX

    def video_output(self, out_dir: Path) -> Path:
        return out_dir / self.name

    def records_output(self, out_dir: Path) -> Path:
        return out_dir / self.records_name

    @property
    def local_path(self) -> Path | None:
        """The local file it reads (``file://`` URLs too), for the checks that outputs never touch inputs."""
        if self.kind == FILE:
            return Path(self.target)
        if self.target.lower().startswith("file://"):
            return Path(unquote(urlparse(self.target).path))
        return None


def expand_inputs(inputs: Sequence[str]) -> list[VideoJob]:
    """Every video ``inputs`` name, in order, each once (however spelled: symlinks, ``./``, hard links)."""
    if not inputs:
        raise InputError("nothing to explain: give video files, folders of them, list files (.txt) or URLs")
    jobs: list[VideoJob] = []
    seen_files = FileSet()
    seen_urls: set[str] = set()
    for job in (job for text in inputs for job in _expand(text, from_list=None)):
        file = identify(job.local_path) if job.local_path is not None else None
        seen = seen_files.find(file) is not None if file is not None else job.target in seen_urls
        if seen:
            log.debug("%s is named twice: explained once", job.target)
            continue
        if file is not None:
            seen_files.add(file)
        seen_urls.add(job.target)
        jobs.append(job)
    return jobs


def check_jobs(jobs: Sequence[VideoJob], out_dir: Path, read: Iterable[FileId] = ()) -> None:
    """Refuse two jobs writing one name, and any output that is an input (``read``: the model's files, list
    files...), whatever the spelling; ``out_dir`` may not be an input folder or inside one."""
    by_name: dict[str, VideoJob] = {}
    for job in jobs:
        key = Path(job.name).stem.casefold()  # case-insensitive file systems would merge clip.mp4 and Clip.MP4
        if key in by_name:
            raise InputError(f"{by_name[key].target} and {job.target} would both write {out_dir / job.records_name}: "
                             f"rename one, or explain them into separate output folders")
        by_name[key] = job
    inputs = [identify(p) for job in jobs if (p := job.local_path) is not None] + list(read)
    folder = identify(out_dir)
    if folder.exists and not folder.is_dir:
        raise InputError(f"-o {out_dir} is a file: give a folder for the outputs")
    for source in inputs:
        if source.is_dir and folder.inside(source):
            raise InputError(f"the output folder {out_dir} {'is' if folder.same(source) else 'is inside'} the input "
                             f"folder {source.named}: choose a folder outside the inputs")
    check_writable_folder(folder.real, f"into {out_dir}")
    taken = FileSet(inputs)
    outputs = [out for job in jobs for out in (job.video_output(out_dir), job.records_output(out_dir))]
    for output in [*outputs, out_dir / SUMMARY_NAME]:
        source = taken.find(identify(output))
        if source is not None:
            raise InputError(f"{output} would replace the input {source.named}: an output never replaces an input; "
                             f"choose another output folder")


def read_inputs(inputs: Sequence[str], model: object, weights: object, labels: object) -> list[FileId]:
    """The local files a batch reads besides its videos: list files and folders named, the model's files."""
    named = [identify(text) for text in inputs if "://" not in text]
    return [file for file in named if file.is_dir or file.real.suffix.lower() == LIST_SUFFIX] + \
        model_files(model, weights, labels)


def _expand(text: str, from_list: Path | None) -> list[VideoJob]:
    """One input (on the command line, or a line of the list file ``from_list``) -> its jobs."""
    if "://" in text:
        return [_url_job(text)]
    path = Path(text).expanduser()
    if from_list is not None and not path.is_absolute():
        path = from_list.parent / path
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise InputError(f"{path} is a folder with no video files in it "
                             f"({', '.join(sorted(VIDEO_SUFFIXES))})")
        return [_file_job(p) for p in videos]
    if path.suffix.lower() == LIST_SUFFIX:
        if from_list is not None:
            raise InputError(f"{from_list} lists {path}: list files do not nest; name the videos themselves")
        return [job for line in _list_lines(path) for job in _expand(line, from_list=path)]
    return [_file_job(path)]  # missing or unreadable: that video's row says so (the batch goes on)


def _list_lines(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"no such list file: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the list file {path}: {getattr(error, 'strerror', None) or error}") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise InputError(f"the list file {path} names no video (one path or URL a line)")
    return entries


def _file_job(path: Path) -> VideoJob:
    return VideoJob(str(path), FILE, _output_name(path.name))  # a file's own name is a valid one


def _url_job(url: str) -> VideoJob:
    scheme = url.split("://", 1)[0].lower()
    if scheme + "://" in NETWORK_SCHEMES:
        kind = STREAM
    elif scheme in REMOTE_SCHEMES:
        kind = REMOTE
    else:
        readable = sorted({s.removesuffix('://') for s in NETWORK_SCHEMES} | REMOTE_SCHEMES)
        raise InputError(f"unsupported URL scheme in {url}: streamcam batch reads {', '.join(readable)}")
    parsed = urlparse(url)
    last = unquote(parsed.path.rstrip("/").rsplit("/", 1)[-1]) or parsed.hostname or "stream"
    return VideoJob(url, kind, _output_name(re.sub(r"[^\w.+-]+", "_", last).strip("._") or "video"))


def _output_name(name: str) -> str:
    """The input's file name; ``.mp4`` where its container is not one streamcam writes."""
    path = Path(name)
    return path.name if path.suffix.lower() in CONTAINERS else path.stem + DEFAULT_SUFFIX
