"""Batch denoising of a whole session's files on Dask distributed.

:func:`run_batch` runs one task per file on a local cluster or an existing scheduler, writes
each result and a preview from the worker, and keeps a manifest (``manifest.csv`` and
``manifest.json``) that a re-run uses to skip finished files. :func:`unpack_uploads` turns
uploaded files and ``.zip`` archives into batch inputs safely; :func:`zip_results` packs the
results for download. A file too big for a worker is denoised piece by piece, read and written
in pieces (:mod:`emcore.batch.frames` for stacks, out-of-core PCA for spectrum images).
"""

from __future__ import annotations

from emcore.batch.frames import FRAME_METHODS, denoise_by_frame
from emcore.batch.manifest import read_rows
from emcore.batch.run import BatchSummary, expand_inputs, run_batch
from emcore.batch.task import FileTask, run_file
from emcore.batch.uploads import unpack_uploads, zip_results

__all__ = ["FRAME_METHODS", "BatchSummary", "FileTask", "denoise_by_frame", "expand_inputs", "read_rows", "run_batch",
           "run_file", "unpack_uploads", "zip_results"]
