"""Two checkouts of streamcam side by side: fps of the default pipeline (``streamcam in.mp4 -o out.mp4``),
and with ``--explain`` images/s of ``Explainer(...)(frames)`` per method and engine.

Each round runs every checkout once, alternating, each in its own process (its
``PYTHONPATH`` = the checkout), on the same generated clip (the cat photo panning)
or the same real photos; a process builds the Explainer, runs once to warm up,
then times one run (``--explain``: calls for ``--seconds``). The median per
checkout is kept. Extra ``run()`` options go as ``key=value``.

    python scripts/bench_ab.py /tmp/before . [--rounds 3] [--frames 120] [--sizes 640x360,1280x720] [render=host]
    python scripts/bench_ab.py /tmp/before . --explain [--batch 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_RUN = """
import sys, time, streamcam
clip, out, options = sys.argv[1], sys.argv[2], eval(sys.argv[3])
ex = streamcam.Explainer(device="cpu").prepare()
streamcam.run(clip, out, display=False, explainer=ex, overwrite=True, **options)
started = time.perf_counter()
summary = streamcam.run(clip, out, display=False, explainer=ex, overwrite=True, **options)
print(summary.frames / (time.perf_counter() - started))
"""


# One Explainer per case, called on --batch real photos (640x480) for --seconds: images/s.
EXPLAIN_CASES = {
    "cam, auto (onnxruntime)": {},
    "cam, torch": {"backend": "torch"},
    "gradcam, torch": {"backend": "torch", "method": "gradcam"},
    "guided-gradcam, torch": {"backend": "torch", "method": "guided-gradcam"},
    "cam + grid (auto), torch": {"backend": "torch", "layers": "auto"},
    "cam top-3, auto": {"top_k": 3},
}
ONE_EXPLAIN = """
import sys, time, cv2, streamcam
from streamcam.demo import photo
options, batch, seconds = eval(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
frames = [cv2.resize(photo(name), (640, 480)) for name in ("chelsea", "coffee")] * batch
frames = frames[:batch]
ex = streamcam.Explainer(device="cpu", **options)
for _ in range(2):
    ex(frames).boxes
count, started = 0, time.perf_counter()
while time.perf_counter() - started < seconds:
    ex(frames).boxes
    count += batch
print(count / (time.perf_counter() - started))
"""


def explain_table(checkouts: list[str], rounds: int, batch: int, seconds: float, only: str = "") -> None:
    """images/s of each EXPLAIN_CASES case (those whose name contains ``only``), per checkout, alternating
    within each round."""
    print(f"| case (batch {batch}) | {' | '.join(checkouts)} | last / first |")
    print("|---|" + "---|" * (len(checkouts) + 1))
    for case, options in EXPLAIN_CASES.items():
        if only not in case:
            continue
        rates: dict[str, list[float]] = {c: [] for c in checkouts}
        for _ in range(rounds):
            for checkout in checkouts:
                env = {**os.environ, "PYTHONPATH": str(Path(checkout).resolve())}
                done = subprocess.run([sys.executable, "-c", ONE_EXPLAIN, repr(options), str(batch), str(seconds)],
                                      env=env, capture_output=True, text=True, check=True)
                rates[checkout].append(float(done.stdout.split()[-1]))
        medians = [statistics.median(rates[c]) for c in checkouts]
        print(f"| {case} | {' | '.join(f'{m:.1f}' for m in medians)} | {medians[-1] / medians[0]:.3f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--sizes", default="640x360,1280x720")
    parser.add_argument("--explain", action="store_true", help="time Explainer calls per method instead")
    parser.add_argument("--batch", type=int, default=8, help="--explain: frames per call")
    parser.add_argument("--seconds", type=float, default=3.0, help="--explain: timed per run")
    parser.add_argument("--cases", default="", help="--explain: only the cases whose name contains this")
    args = parser.parse_args()
    options = {k: ast.literal_eval(v) if v[:1].isdigit() or v in ("True", "False") else v
               for k, v in (o.split("=", 1) for o in args.checkouts if "=" in o)}  # run() options, key=value
    args.checkouts = [c for c in args.checkouts if "=" not in c]
    if args.explain:
        explain_table(args.checkouts, args.rounds, args.batch, args.seconds, args.cases)
        return
    sys.path.insert(0, str(Path(args.checkouts[-1]).resolve()))
    from streamcam.demo import pan_frames, photo, write_clip

    print(f"| clip | {' | '.join(args.checkouts)} | last / first |")
    print("|---|" + "---|" * (len(args.checkouts) + 1))
    with tempfile.TemporaryDirectory() as folder:
        for size in (tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")):
            clip = Path(folder) / f"clip_{size[0]}x{size[1]}.mp4"
            write_clip(clip, (f for f, _ in pan_frames(photo("chelsea"), size, args.frames)), 30.0)
            fps: dict[str, list[float]] = {c: [] for c in args.checkouts}
            for _ in range(args.rounds):
                for checkout in args.checkouts:
                    env = {**os.environ, "PYTHONPATH": str(Path(checkout).resolve())}
                    done = subprocess.run([sys.executable, "-c", ONE_RUN, str(clip), str(Path(folder) / "out.mp4"),
                                           repr(options)], env=env, capture_output=True, text=True, check=True)
                    fps[checkout].append(float(done.stdout.split()[-1]))
            medians = [statistics.median(fps[c]) for c in args.checkouts]
            print(f"| {size[0]}x{size[1]} | {' | '.join(f'{m:.1f}' for m in medians)} "
                  f"| {medians[-1] / medians[0]:.3f}x |")


if __name__ == "__main__":
    main()
