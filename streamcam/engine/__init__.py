"""The threaded pipeline: buffers, batcher, inference worker, render stage."""

from .pipeline import RunSummary, annotate, run, run_config

__all__ = ["RunSummary", "annotate", "run", "run_config"]
