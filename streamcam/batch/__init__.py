"""``streamcam batch``: a whole collection of videos explained, each into its annotated video and JSON lines,
with one summary table; resumable, and a bad video never stops the others.

- :mod:`.inputs`: INPUTS -> :class:`VideoJob` list, and the checks on the names they write
- :mod:`.video`: :func:`explain_video`, one video through the normal pipeline -> a :class:`VideoResult`
- :mod:`.outdir`: staging, publishing only complete outputs, leftovers, one batch per folder
- :mod:`.remote`: files on storage pyarrow reads (``s3://``...), streamed to FFmpeg
- :mod:`.summary`: ``summary.parquet`` and the one-line summary
- :mod:`.progress`: one bar over every video's frames
- :mod:`.command`: the command (:class:`BatchCommand`, :func:`run_batch`), the local runner
- :mod:`.ray_runner`: ``--ray``, the runner over Ray actors (one Explainer each, restarted and retried when they die)

Nothing here imports torch until a video is explained, nor pyarrow until the summary is read or written.
"""

from .command import BatchCommand, run_batch
from .inputs import VideoJob, expand_inputs
from .progress import BatchProgress
from .video import VideoResult, explain_video

__all__ = ["BatchCommand", "BatchProgress", "VideoJob", "VideoResult", "expand_inputs", "explain_video", "run_batch"]
