"""What every Ray job of the project shares, written once.

    cluster     ensure_ray / start_local_ray (one behaviour, the worker environment), check_capacity
    datasets    single_map_dataset / run_map: one Ray Data task per item
    manifest    the per-stream manifest (status, settings, source version, counts) of a stream dataset
    stream_job  per-stream outcomes and summaries, failing a stream, publishing staged parts
    cli         shared command-line options (--address, --quiet, --output) and deprecated aliases

May import: pipelines.media, epg
"""
