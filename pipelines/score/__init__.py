"""Batch scoring (``jobs/embed.py``): clips or raw videos -> the embeddings dataset (DESIGN §3.2).

    config      EmbedConfig, EmbedError, what every row records of how it was made
    model       ScoringModel (a checkpoint, its id, λ) and ClipEmbedder (one model per actor)
    inputs      clip rows -> decoded tensors for the actors, and the driver's bookkeeping columns
    plans       StreamPlan: each stream's input, config hash and source version (resume)
    pipeline    the Ray Data graph: read or decode -> actor pool -> the driver
    publish     each stream's rows staged as parts while they arrive, then published
    job         run_embed and its summary
    query       embed_video_file: one short video in this process (search by video)
    embeddings  the embeddings schema and reader (``read_embeddings``)

May import: pipelines.train, pipelines.ingest, pipelines.runtime, pipelines.media, epg
"""
