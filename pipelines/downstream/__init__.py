"""Downstream tasks on the embeddings (DESIGN §5): I/O glue around the ``epg`` library.

    anomaly_job.run_anomaly     av_dist → threshold μ + σ-multiple → events, timelines  (jobs/anomaly.py)
    search_job.run_search       query clip or video → top-k with contact sheet          (jobs/search.py)
    localize_job.run_localize   frozen features → linear / CPSP heads → accuracy per view  (jobs/localize.py)

Shared pieces: ``labels`` (the §3.3 table aligned to embeddings rows), ``clock``
(HH:MM:SS / wall-clock), ``outputs`` (atomic writes of a job's output directory),
``previews`` (thumbnails and log-mels from the clips), ``plots`` (matplotlib, Agg),
``heads`` (localization heads behind ``--head``), ``cpsp_windows`` (10-s windows of
embeddings and labels for the CPSP head).

None of these jobs needs Ray: they are NumPy/PyTorch on one machine (a day of
embeddings is a few hundred MB). Run through ``ray job submit`` they run on the head as is.

May import: pipelines.report, pipelines.score, pipelines.ingest, pipelines.runtime, pipelines.media, epg
"""


class DownstreamError(ValueError):
    """Bad input to a downstream job (a stream, file or option); the message names it."""
