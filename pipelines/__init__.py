"""The Ray stages of the project, one subpackage each, over the pure library ``epg``.

    media/       reading recordings: input URIs, output storage, media inspection, containers, frames, audio
    runtime/     what every Ray job shares: Ray start/connect, cluster checks, single-map datasets,
                 per-stream manifests and publishing, damaged-shard checks, the one-run-per-output
                 lock, command-line groups
    ingest/      videos -> clips Parquet (Ray Data), and the reader of the clips dataset
    train/       clips -> EPG encoders (Ray Train): config, data, driver, loop, checkpoints, metrics
    score/       clips or videos -> embeddings Parquet (Ray Data actors), and the embeddings reader
    report/      the HTML toolkit and the report page over a run's outputs
    downstream/  anomaly detection, event search, localization heads on the embeddings
    live/        live cameras (HLS, RTSP, NVR folders) -> growing clips, embeddings, anomaly alerts
    demo/        the main job: every stage on synthetic footage, then the report
    synthetic/   the synthetic multi-camera street generator with ground truth

Imports run downward only, in this order: demo -> live -> downstream -> report -> score -> train ->
ingest -> runtime -> media -> epg; ``synthetic`` stands alone (only ``demo`` uses it). Each
subpackage's docstring says what it may import; ``tests/test_layout.py`` holds the code to it.
"""
