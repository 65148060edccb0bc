"""Training speed of the default model (EfficientNet-Lite0, ImageNet weights, a new 3-class head): images/s.

Times the second of two epochs of :func:`streamcam.train.loop.train_classifier` (the first one warms up:
kernels chosen, memory allocated, workers started) over ``--batches`` batches of real-photo
images (scikit-image's, cropped and pasted on backgrounds, ``--image-size`` pixels a side, as a user's
photos would be decoded), for each combination asked: DataLoader workers, precision, and phase (the head
alone, as in the frozen epochs, or the whole net). Rounds go through every combination in turn (a
machine shared with other work slows them alike); one markdown row per combination gives the median and
the range. The measurements behind ``TrainOptions``' defaults (``DEFAULT_WORKERS``, ``AUTO_PRECISION``).

    python scripts/bench_train.py [--workers 0 1 2] [--precision fp32 bf16] [--batches 4] [--batch 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn

from streamcam.demo import write_photo_folder
from streamcam.models import load_model
from streamcam.train.data import read_image_folder
from streamcam.train.loop import TrainOptions, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--phase", nargs="+", default=["head", "all"], choices=["head", "all"])
    parser.add_argument("--batches", type=int, default=4, help="timed batches per combination")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, nargs=2, default=(320, 480), metavar=("MIN", "MAX"))
    args = parser.parse_args()
    logging.getLogger("streamcam").setLevel(logging.WARNING)
    loaded = load_model()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; EfficientNet-Lite0 at "
          f"{loaded.input_size}, batch {args.batch}, images of {args.image_size[0]}-{args.image_size[1]} px")
    with tempfile.TemporaryDirectory(prefix="streamcam-bench-train-") as folder:
        # One class holds the timed images (and one for validation); two of two images each (one for training,
        # one for validation) make it a classifier. The last partial batch (2 images) is dropped.
        per_class = args.batches * args.batch + 1
        write_photo_folder(Path(folder), ("chelsea",), per_class, tuple(args.image_size))
        write_photo_folder(Path(folder), ("coffee", "astronaut"), 2, tuple(args.image_size))
        split = read_image_folder(Path(folder), val_fraction=1 / per_class)
        combinations = list(itertools.product(args.phase, args.precision, args.workers))
        rates: dict[tuple, list[float]] = {combination: [] for combination in combinations}
        for _ in range(args.rounds):
            for phase, precision, workers in combinations:
                model = load_model().module
                model.classifier = nn.Linear(model.classifier.in_features, len(split.classes))
                options = TrainOptions.for_model(loaded, epochs=2, batch=args.batch, workers=workers,
                                                 precision=precision, device="cpu", progress=False,
                                                 frozen_epochs=2 if phase == "head" else 0, patience=2)
                result = train_classifier(model, list(model.classifier.parameters()), None, split, options)
                rates[phase, precision, workers].append(result.history[-1].images_per_second)
    print("| phase | precision | workers | images/s (median) | range |")
    print("|---|---|---|---|---|")
    for (phase, precision, workers), measured in rates.items():
        print(f"| {phase} | {precision} | {workers} | {statistics.median(measured):.1f} | "
              f"{min(measured):.1f}-{max(measured):.1f} |")


if __name__ == "__main__":
    main()
