"""Weakly supervised localisation error, as the CAM paper defines it (Zhou et al. 2016, sec. 3).

For each image, the model's top-5 classes each get a box from their heatmap
(largest connected component above ``threshold`` x max). An image is localised
at top-1 if the top class is a ground-truth class and its box overlaps one of
that class's ground-truth boxes with IoU >= 0.5; at top-5 if any of the top 5
does. The error is the share of images not localised. The CAM paper reports 43.0 %
top-5 localisation error for GoogLeNet-GAP on ILSVRC validation at threshold 0.2.

    python scripts/localization_eval.py --images DIR --csv boxes.csv [--model NAME] [--method cam]
        [--threshold 0.2] [--batch 16] [--device auto] [--json result.json]

``boxes.csv``: a header line, then ``file,x0,y0,x1,y1,class`` rows, one per
ground-truth box (several rows per image allowed), in pixels of the image (x1, y1
exclusive); ``class`` is a class id or a label of the model.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import streamcam
from streamcam.boxes import box_iou
from streamcam.sources import read_image

TOP = 5
IOU_NEEDED = 0.5


def read_ground_truth(path: Path, ex: streamcam.Explainer) -> dict[str, list[tuple[int, tuple[int, int, int, int]]]]:
    """file name -> [(class id, box)], from ``file,x0,y0,x1,y1,class`` rows."""
    truth: dict[str, list] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            box = tuple(int(float(row[k])) for k in ("x0", "y0", "x1", "y1"))
            truth[row["file"]].append((ex.class_index(row["class"].strip()), box))
    return truth


def localised(class_ids: list[int], boxes: list[tuple[int, ...]], truth: list[tuple[int, tuple]]) -> bool:
    """Whether any (class, box) prediction matches a ground-truth class with IoU >= 0.5."""
    return any(
        c == true_class and box_iou(box, true_box) >= IOU_NEEDED
        for c, box in zip(class_ids, boxes)
        for true_class, true_box in truth
    )


def evaluate(images: Path, truth: dict, ex: streamcam.Explainer, batch: int) -> dict[str, float]:
    names = sorted(truth)
    misses = {1: 0, TOP: 0}
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        res = ex([read_image(images / name) for name in chunk])
        for b, name in enumerate(chunk):
            ids = res.class_ids[b].tolist()
            boxes = [tuple(int(v) for v in box) for box in res.boxes[b]]
            for top in misses:
                misses[top] += not localised(ids[:top], boxes[:top], truth[name])
    count = len(names)
    return {"images": count, "top1_error": misses[1] / count, "top5_error": misses[TOP] / count}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--model", default=streamcam.DEFAULT_MODEL)
    parser.add_argument("--weights")
    parser.add_argument("--method", default="cam")
    parser.add_argument("--layer")
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    try:
        ex = streamcam.Explainer(model=args.model, weights=args.weights, method=args.method, layer=args.layer,
                                 device=args.device, top_k=TOP, box_threshold=args.threshold)
        truth = read_ground_truth(args.csv, ex)
        if not truth:
            raise streamcam.InputError(f"{args.csv} has no ground-truth rows")
        result = evaluate(args.images, truth, ex, args.batch)
    except (streamcam.StreamcamError, OSError, KeyError, ValueError) as error:
        print(f"localization_eval: error: {error}", file=sys.stderr)
        return 2
    result.update(model=ex.model_name, method=ex.method.name, layer=ex.layer, threshold=args.threshold)
    print(f"{result['images']} images, {ex.model_name} / {ex.method.name} / {ex.layer}, threshold {args.threshold}")
    print(f"top-1 localization error: {result['top1_error'] * 100:.1f} %")
    print(f"top-5 localization error: {result['top5_error'] * 100:.1f} %")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
