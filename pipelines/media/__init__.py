"""Reading recordings and writing outputs, with no notion of clips, models or Ray.

    sources     input URIs (files, directories, globs, fsspec/pyarrow URIs) -> VideoSource, open_source
    storage     OutputStore: any pyarrow filesystem, atomic writes (temp name + rename)
    info        inspect_video: streams, timeline origin, duration (``VideoInfo``)
    containers  a worker's kept-open frame containers (an mp4 open parses its whole index)
    frames      the frames shown at given times, by PyAV or decord, scaled once per window
    audio       a window's audio as mono float at the log-mel sample rate

May import: epg
"""
