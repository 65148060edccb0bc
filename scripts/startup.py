"""Start-up (issue 14): how long the command takes to answer --help, --version and usage errors.

Each case is a whole process (``python -m streamcam ...``), timed from spawn to
exit, rounds interleaved so that the machine's load falls on every case alike;
the interpreter alone (``python -c pass``) and ``import torch`` are measured in
the same rounds for scale. Then ``python -X importtime`` lists what the slowest
usage error imports, by cumulative time.

    python scripts/startup.py [--rounds 7] [--compare OLD_CHECKOUT]

``--compare`` also runs every streamcam case from another checkout of the
project (e.g. a ``git worktree`` of an older commit), in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
    "streamcam --version": ["-m", "streamcam", "--version"],
    "streamcam --help": ["-m", "streamcam", "--help"],
    "streamcam missing.mp4": ["-m", "streamcam", "missing.mp4"],
    "streamcam in.mp4 -o taken.mp4": ["-m", "streamcam", "in.mp4", "-o", "taken.mp4"],
    "streamcam in.mp4 --class espreso": ["-m", "streamcam", "in.mp4", "--class", "espreso"],
    "streamcam in.mp4 --model resnet5O": ["-m", "streamcam", "in.mp4", "--model", "resnet5O"],
    "streamcam export --opset 5": ["-m", "streamcam", "export", "--opset", "5"],
    "streamcam --webcam 7 (no such camera)": ["-m", "streamcam", "--webcam", "7", "--no-display"],
}


def timed(args: list[str], cwd: Path, code: Path | None = None) -> float:
    """Seconds from spawn to exit; ``code``: the checkout whose streamcam runs (default: the installed one)."""
    env = dict(os.environ, PYTHONPATH=str(code)) if code else None
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, check=False, env=env)
    return time.perf_counter() - started


def importtime(args: list[str], cwd: Path, top: int = 8) -> list[tuple[float, str]]:
    """The ``top`` imports by cumulative time (ms) of one run, top-level packages only."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
            if cumulative.isdigit() and "." not in name.strip():
                rows.append((int(cumulative) / 1000, name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compare", type=Path, help="another checkout whose streamcam is timed alongside")
    options = parser.parse_args()
    rounds, other = options.rounds, options.compare
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        subprocess.run([sys.executable, "-c", "from pathlib import Path; from streamcam.demo import pan_frames, photo,"
                        " write_clip; write_clip(Path('in.mp4'), (f for f, _ in pan_frames(photo('chelsea'),"
                        " (320, 240), 4)), 10)"], cwd=cwd, check=True)
        (cwd / "taken.mp4").write_bytes(b"an earlier recording")
        times: dict[str, list[float]] = {name: [] for name in CASES}
        before: dict[str, list[float]] = {name: [] for name in CASES if other and "streamcam" in name}
        for _ in range(rounds):
            for name, args in CASES.items():
                times[name].append(timed(args, cwd))
                if name in before:
                    before[name].append(timed(args, cwd, other))
        import torch

        print(f"{platform.node()}: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
              f"torch {torch.__version__}, {rounds} rounds interleaved\n")
        floor = statistics.median(times["python -c pass"])
        compared = f" | {other.name}, median s | {other.name} / this" if other else ""
        print(f"| command | median s | max s | over the bare interpreter, s{compared} |")
        print("|---|---|---|---|" + ("---|---|" if other else ""))
        for name, values in times.items():
            median = statistics.median(values)
            row = f"| `{name}` | {median:.2f} | {max(values):.2f} | {median - floor:.2f}"
            if other:
                old = statistics.median(before[name]) if name in before else None
                row += f" | {old:.2f} | {old / median:.0f}x" if old else " | | "
            print(row + " |")
        print("\nWhat `streamcam in.mp4 --class espreso` imports (cumulative ms, top-level packages):\n")
        for ms, module in importtime(CASES["streamcam in.mp4 --class espreso"], cwd):
            print(f"- {module}: {ms:.0f} ms")


if __name__ == "__main__":
    main()
