"""Ingest (``jobs/ingest.py``): recordings -> the clips dataset, 1-s rows of JPEG crops and log-mel (DESIGN §3.1).

    config         IngestConfig and its output hash (what makes a resumed run skip a stream)
    clip_table     the clips schema and a window's rows (frames -> two crops -> JPEG, audio -> log-mel)
    window         one time window of one video: WindowTask -> rows (in memory or a staged part)
    job            run_ingest: inspect -> decode windows -> compact into shards -> complete manifests
    clips_dataset  the reader side: complete streams of a clips root, one stream's rows

May import: pipelines.runtime, pipelines.media, epg
"""
