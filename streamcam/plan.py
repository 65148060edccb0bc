"""Every file a run reads and writes, resolved and checked against each other before anything is created.

Refused with one line naming both paths, whatever their spelling, symlinks or
hard links, and whether or not ``--overwrite`` is given:

- an output that is an input (a video, an image, the model, weights or labels file);
- two outputs that are one file (``-o x.mp4 --json x.mp4``);
- an image output folder that is an input folder, or inside one.

Refused unless ``--overwrite``: an output file that already exists. Nothing is
created here; the sinks create their files only once every check has passed
(and through :class:`streamcam.atomic.OutputFile`, which replaces an old file
only when its replacement is complete).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import InputError
from .identity import FileId, FileSet, first_duplicate, identify
from .video_out import CONTAINERS, container_for

if TYPE_CHECKING:
    from .config import RunConfig
    from .sources import Source

log = logging.getLogger(__name__)

PATTERN = "{source}"  # in -o / --json: replaced by each source's short name
STDOUT: Literal["-"] = "-"  # --json -: the records go to standard output
IMAGE_FALLBACK_SUFFIX = ".png"  # for an input image whose format OpenCV reads but cannot write

Records = Path | Literal["-"]


@dataclass(frozen=True)
class SourceOutputs:
    """What one source's frames are written to."""

    video: Path | None = None
    image_folder: Path | None = None
    images: dict[str, Path] = field(default_factory=dict)  # input image, as named -> its annotated image
    records: Records | None = None  # this source's own JSON lines ({source} in --json)


@dataclass(frozen=True)
class OutputPlan:
    """The outputs of a run, per source, all checked."""

    by_source: dict[str, SourceOutputs]
    shared_records: Records | None = None  # one JSON lines file (or standard output) for every source
    overwrite: bool = False
    replaceable: frozenset[str] = frozenset()  # outputs replaced even without overwrite (the demo's own)

    def may_replace(self, path: Records) -> bool:
        return self.overwrite or str(path) in self.replaceable

    def files(self) -> list[tuple[str, Path]]:
        """Every output file, with the option that names it, in order."""
        paths: list[tuple[str, Path]] = []
        for outputs in self.by_source.values():
            paths += [(option, p) for option, p in (("-o", outputs.video), ("--json", outputs.records))
                      if isinstance(p, Path)]
            paths += [("-o", p) for p in outputs.images.values()]
        if isinstance(self.shared_records, Path):
            paths.append(("--json", self.shared_records))
        return paths


def plan_outputs(config: RunConfig, sources: Sequence[Source]) -> OutputPlan:
    """Name every output of ``config`` for ``sources`` and check them all (see the module docstring)."""
    from .sources import source_names

    infos = [s.info for s in sources]
    several = len(infos) > 1
    if several and config.output is not None and PATTERN not in config.output:
        raise InputError(f"{len(infos)} sources: give -o a pattern with {PATTERN}, e.g. out_{PATTERN}.mp4")
    if config.output == STDOUT:
        raise InputError("-o - is not supported: video needs a file (use --json - for the records on standard output)")
    by_source: dict[str, SourceOutputs] = {}
    for source, name in zip(sources, source_names(infos)):
        video = folder = records = None
        images: dict[str, Path] = {}
        if config.output is not None:
            path = Path(config.output.replace(PATTERN, name))
            if source.info.fps is None:  # images in -> images out
                if path.suffix.lower() in CONTAINERS:
                    raise InputError(f"images in, images out: give a folder for -o, not {path}")
                folder, images = path, image_targets(path, source.files)
            else:
                container_for(path)  # a video file type streamcam writes
                video = path
        if config.json is not None and PATTERN in config.json:
            records = Path(config.json.replace(PATTERN, name))
        by_source[source.info.source_id] = SourceOutputs(video, folder, images, records)
    shared: Records | None = None
    if config.json is not None and PATTERN not in config.json:
        shared = STDOUT if config.json == STDOUT else Path(config.json)
    plan = OutputPlan(by_source, shared, config.overwrite, frozenset(config.replaceable))
    check_plan(plan, run_inputs(config, sources))
    return plan


def run_inputs(config: RunConfig, sources: Sequence[Source]) -> list[FileId]:
    """Every file and folder the run reads: inputs, and the model, weights and labels files."""
    paths = [p for s in sources for p in (*s.files, *s.folders)]
    return [identify(p) for p in paths] + model_files(config.model, config.weights, config.labels)


def model_files(model: object, weights: object, labels: object) -> list[FileId]:
    """The files a model is read from: a model file, its weights, its labels."""
    from .model_names import RANDOM_WEIGHTS, looks_like_file

    paths: list[str | Path] = []
    if isinstance(model, (str, Path)) and looks_like_file(str(model)):
        paths.append(model)
    if isinstance(weights, (str, Path)) and weights != RANDOM_WEIGHTS:
        paths.append(weights)
    if isinstance(labels, (str, Path)):
        paths.append(labels)
    return [identify(p) for p in paths]


def check_plan(plan: OutputPlan, inputs: Sequence[FileId]) -> None:
    """Refuse the plan if it would touch an input, write one file twice, or replace a file unasked."""
    for outputs in plan.by_source.values():
        if outputs.image_folder is not None:
            check_image_folder(identify(outputs.image_folder), inputs)
    files = plan.files()
    check_outputs([identify(p) for _, p in files], inputs, [plan.may_replace(p) for _, p in files],
                  [option for option, _ in files])
    for outputs in plan.by_source.values():
        video = identify(outputs.video) if outputs.video is not None else None
        if video is not None and video.is_special:
            raise InputError(f"cannot write a video to {video.named}: it is a device or pipe, not a file")


def check_outputs(outputs: Sequence[FileId], inputs: Sequence[FileId], overwrite: bool | Sequence[bool],
                  options: Sequence[str] | None = None) -> None:
    """Each output: not an input, not another output, not an existing file unless ``overwrite``
    (for all, or one flag per output), writable. ``options`` name the option each output came
    from (``-o``, ``--json``), for the messages.
    """
    overwrite = [overwrite] * len(outputs) if isinstance(overwrite, bool) else list(overwrite)
    options = list(options or ["-o"] * len(outputs))
    read = FileSet(inputs)
    for option, output in zip(options, outputs):
        source = read.find(output)
        if source is not None:
            also = "" if source.named == output.named else f" ({source.named})"
            raise InputError(f"{option} {output.named} is an input of this run{also}: an output never "
                             f"replaces an input, even with --overwrite; choose another name")
    twice = first_duplicate(outputs)
    if twice:
        first, second = (f"{options[next(i for i, o in enumerate(outputs) if o is f)]} {f.named}" for f in twice)
        raise InputError(f"{first} and {second} are the same file: give each output its own name")
    for output, allowed in zip(outputs, overwrite):
        replaces(output, allowed)
    folders = {o.real.parent: o.named for o in reversed(outputs) if not (o.is_special and o.exists)}
    for folder, named in folders.items():  # each folder once, named by its first output
        check_writable_folder(folder, named)


def replaces(output: FileId, overwrite: bool) -> bool:
    """Whether writing ``output`` replaces an existing file; refused unless ``overwrite``, and always for a folder."""
    if output.is_dir:
        raise InputError(f"{output.named} is a folder; give a file name")
    if output.replaced_by_writing and not overwrite:
        raise InputError(f"{output.named} already exists: pass --overwrite to replace it, or choose another name")
    return output.replaced_by_writing


def check_image_folder(folder: FileId, inputs: Sequence[FileId]) -> None:
    """An image output folder: a folder (or to be made), outside every input folder."""
    if folder.exists and not folder.is_dir:
        raise InputError(f"{folder.named} is a file; images are written into a folder")
    for source in inputs:
        if source.is_dir and folder.inside(source):
            where = "is" if folder.same(source) else "is inside"
            raise InputError(f"the output folder {folder.named} {where} the input folder {source.named}: "
                             f"choose a folder outside the inputs")
    check_writable_folder(folder.real)


def check_writable_folder(folder: Path, output: str | None = None) -> None:
    """The folder exists and is writable, or can be made: its nearest existing parent is a writable folder.

    Tried for real (a folder made and removed at once): permission bits do not tell, for root, about
    read-only mounts or places such as ``/proc`` where nothing can be created.
    """
    what = output or f"into {folder}"
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"cannot write {what}: {existing} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".streamcam-probe-", dir=existing))
    except OSError as error:
        raise InputError(f"cannot write {what}: nothing can be created in {existing} "
                         f"({error.strerror or error})") from None


def image_targets(folder: Path, images: Sequence[Path]) -> dict[str, Path]:
    """Where each annotated image goes: ``folder/NAME``, or, when two inputs share a name,
    ``folder/PARENT/NAME`` with PARENT the name of the folder it came from (``_2`` for a second
    folder of that name). A format OpenCV cannot write becomes ``.png``."""
    names = [_writable_name(p.name) for p in images]
    if len({n.casefold() for n in names}) == len(names):
        relative = names
    else:
        parents = _short_folder_names([p.parent for p in images])
        relative = [f"{parents[i]}/{name}" for i, name in enumerate(names)]
        log.info("images of the same name come from several folders: each goes into a sub-folder of %s "
                 "named after its folder", folder)
    return {str(path): folder / name for path, name in zip(images, _distinct(relative))}


def _writable_name(name: str) -> str:
    import cv2

    return name if cv2.haveImageWriter(name) else str(Path(name).with_suffix(IMAGE_FALLBACK_SUFFIX))


def _short_folder_names(folders: Sequence[Path]) -> list[str]:
    """Each folder's own name (its real one for ``.``); a second folder of the same name gets ``_2``."""
    chosen: dict[Path, str] = {}
    for folder in folders:
        real = Path(os.path.realpath(folder))
        if real not in chosen:
            base = real.name or "root"
            taken = {n.casefold() for n in chosen.values()}
            candidate, n = base, 2
            while candidate.casefold() in taken:
                candidate, n = f"{base}_{n}", n + 1
            chosen[real] = candidate
    return [chosen[Path(os.path.realpath(f))] for f in folders]


def _distinct(names: list[str]) -> list[str]:
    """Names made unique (case-insensitively, as some file systems compare them) with ``_2``, ``_3``..."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 2
        path = Path(name)
        while candidate.casefold() in seen:
            candidate, n = str(path.with_name(f"{path.stem}_{n}{path.suffix}")), n + 1
        seen.add(candidate.casefold())
        out.append(candidate)
    return out
