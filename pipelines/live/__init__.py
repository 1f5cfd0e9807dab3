"""Live cameras (``jobs/watch.py``): follow HLS, RTSP or rolling segment files; clips, embeddings, alerts.

    config      WatchConfig, WatchError, the kind of a source
    sources     HLS playlists, NVR segment folders, RTSP through ffmpeg: complete segments as local files
    timeline    where each segment falls on the stream's seconds (epochs when the source's clock restarts)
    appender    committed seconds appended to a clips or embeddings root under a ``live`` manifest
    alerts      contiguous anomalous seconds -> start/end alert lines (JSON lines, webhook)
    watcher     StreamWatcher: one source, segments -> ingest's clips -> embeddings -> scores -> alerts
    job         run_watch: one Ray actor per source, progress line, Prometheus metrics

May import: pipelines.downstream, pipelines.score, pipelines.ingest, pipelines.runtime, pipelines.media, epg
"""
