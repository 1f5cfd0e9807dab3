"""What every Ray job of the project shares, written once.

    cluster     ensure_ray / start_local_ray (one behaviour, the worker environment), check_capacity
    datasets    single_map_dataset / run_map: one Ray Data task per item
    manifest    the per-stream manifest (status, settings, source version, counts) of a stream dataset;
                DamagedFile for one that cannot be read
    shards      reading Parquet shards so that damage names the file; damaged_shards checks them all
    lock        output_lock: one run at a time per output root (flock; nothing on object storage)
    isolated    bounded_call: a call in the worker's child process, stopped past its bound or when it crashes
    stream_job  per-stream outcomes and summaries, failing a stream, publishing staged parts
    cli         shared command-line options (--address, --quiet, --output, --skip-bad-shards) and deprecated
                aliases

May import: pipelines.media, epg
"""
