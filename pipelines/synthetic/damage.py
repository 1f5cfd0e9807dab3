"""Damaged recordings on purpose: a generated stream recoded into the containers users record in, and
seeded mutants of those files (bit flips, zeroed spans, truncations, damaged headers, swapped segments).

    recode(source, target, container)              one clean container of the stream (``CONTAINERS``)
    mutate(data, mutation, container, rng)         one damaged copy of a file's bytes, and what was done
    write_mutants(clean, folder, count, seed)      ``count`` mutants, spread over the containers and mutations

The fuzz benchmark (``bench/fuzz.py``) and the fuzz tests (``tests/pipelines/ingest/test_fuzz.py``)
feed them to ingest and scoring. A mutant is named ``<container>-<mutation>-<index>`` so the stream id
says what was done to it; the same seed always gives the same bytes.

May import: nothing of the project (PyAV only).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

# name: (suffix, PyAV format, video codec, audio codec, video codec options)
CONTAINERS: dict[str, tuple[str, str, str, str, dict[str, str]]] = {
    "mp4": (".mp4", "mp4", "libx264", "aac", {"preset": "ultrafast", "bf": "2"}),
    "mkv": (".mkv", "matroska", "libx264", "aac", {"preset": "ultrafast"}),
    "webm_vp9": (".webm", "webm", "libvpx-vp9", "libopus", {"deadline": "realtime", "cpu-used": "8"}),
    "webm_av1": (".webm", "webm", "libsvtav1", "libopus", {"preset": "12"}),
    "ts": (".ts", "mpegts", "libx264", "aac", {"preset": "ultrafast"}),
    "avi": (".avi", "avi", "mpeg4", "libmp3lame", {}),
}
MUTATIONS = ("bitflip", "zero_span", "truncate", "header", "swap")

# Structures whose damage hurts most, per container: the bytes right after these tags are overwritten.
_HEADER_TAGS: dict[str, tuple[bytes, ...]] = {
    "mp4": (b"moov", b"mvhd", b"trak", b"tkhd", b"mdhd", b"stsd", b"stts", b"stss", b"stsc", b"stsz", b"stco"),
    "matroska": (b"\x1a\x45\xdf\xa3", b"\x18\x53\x80\x67", b"\x15\x49\xa9\x66", b"\x16\x54\xae\x6b",
                 b"\x1c\x53\xbb\x6b"),  # EBML header, Segment, Info, Tracks, Cues
    "avi": (b"RIFF", b"hdrl", b"avih", b"strl", b"strh", b"strf", b"movi", b"idx1"),
}
_TS_PACKET = 188


@dataclass(frozen=True)
class Mutant:
    """One damaged file: where it is, which clean file it came from, and what was done to it."""

    path: Path
    container: str
    mutation: str
    detail: str


def recode(source: Path, target: Path, container: str) -> Path:
    """Decode ``source`` (video + audio) and encode it into ``target`` as ``container`` (a key of CONTAINERS)."""
    _, fmt, vcodec, acodec, options = CONTAINERS[container]
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise
    with av.open(str(source)) as src, av.open(str(target), "w", format=fmt) as dst:
        vin, ain = src.streams.video[0], src.streams.audio[0]
        rate = Fraction(vin.average_rate or 10).limit_denominator(1000)
        vout = dst.add_stream(vcodec, rate=rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.options = dict(options)
        aout = dst.add_stream(acodec, rate=48_000 if acodec == "libopus" else ain.codec_context.sample_rate)
        aout.layout = "mono"
        resampler = av.AudioResampler(format=aout.codec_context.format.name if aout.codec_context.format else "fltp",
                                       layout="mono", rate=aout.codec_context.sample_rate)
        for index, frame in enumerate(src.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1) / rate
            dst.mux(vout.encode(frame))
        dst.mux(vout.encode(None))
        src.seek(0)
        for frame in src.decode(audio=0):
            frame.pts = None
            for converted in resampler.resample(frame):
                dst.mux(aout.encode(converted))
        for converted in resampler.resample(None):
            dst.mux(aout.encode(converted))
        dst.mux(aout.encode(None))
    return target


def _span(size: int, rng: random.Random, smallest: int, largest: int, start: int = 0) -> tuple[int, int]:
    """A random [a, b) of length in [smallest, largest] inside [start, size)."""
    length = min(rng.randint(smallest, largest), max(1, size - start - 1))
    a = rng.randrange(start, max(start + 1, size - length))
    return a, a + length


def _header_offsets(data: bytes, fmt: str) -> list[int]:
    """Where the container's structural headers start (offsets of their tags, or of MPEG-TS PAT/PMT packets)."""
    if fmt == "mpegts":
        pmt_pids = {0}
        offsets = []
        for start in range(0, min(len(data), 2000 * _TS_PACKET), _TS_PACKET):
            packet = data[start:start + _TS_PACKET]
            if len(packet) < 5 or packet[0] != 0x47:
                continue
            pid = ((packet[1] & 0x1F) << 8) | packet[2]
            if pid == 0 and len(packet) > 17:  # the PAT names the PMT's PID
                pmt_pids.add(((packet[15] & 0x1F) << 8) | packet[16])
            if pid in pmt_pids:
                offsets.append(start + 4)
        return offsets
    tags = _HEADER_TAGS["matroska" if fmt in ("matroska", "webm") else fmt]
    found = [m.start() + len(tag) for tag in tags for m in re.finditer(re.escape(tag), data[: 1 << 22])]
    return [offset for offset in found if offset < len(data)]


def mutate(data: bytes, mutation: str, container: str, rng: random.Random) -> tuple[bytes, str]:
    """A damaged copy of ``data`` (a file of ``container``) and a short description of the damage."""
    buffer = bytearray(data)
    size = len(buffer)
    skip = min(64, size // 4)  # leave the magic bytes alone unless the mutation is about headers
    if mutation == "bitflip":
        flips = rng.choice((1, 4, 16, 64, 256))
        for _ in range(flips):
            at = rng.randrange(skip, size)
            buffer[at] ^= 1 << rng.randrange(8)
        return bytes(buffer), f"{flips} bit(s) flipped"
    if mutation == "zero_span":
        a, b = _span(size, rng, 16, 64 * 1024, skip)
        buffer[a:b] = bytes(b - a)
        return bytes(buffer), f"bytes {a}-{b} zeroed"
    if mutation == "truncate":
        at = rng.randrange(skip, size)
        return bytes(buffer[:at]), f"cut at byte {at} of {size}"
    if mutation == "header":
        offsets = _header_offsets(data, CONTAINERS[container][1]) or [0]
        k = min(len(offsets), rng.choice((1, 2, 4)))
        # MPEG-TS repeats its tables: damage the first ones, which a reader opening the file relies on.
        chosen = offsets[:k] if CONTAINERS[container][1] == "mpegts" else rng.sample(offsets, k=k)
        for at in chosen:
            length = min(rng.randint(2, 32), size - at)
            buffer[at:at + length] = rng.randbytes(length)
        return bytes(buffer), f"header damaged at byte(s) {', '.join(map(str, sorted(chosen)))}"
    if mutation == "swap":
        length = min(rng.randint(1024, 64 * 1024), (size - skip) // 2)
        a = rng.randrange(skip, size - 2 * length + 1)
        b = rng.randrange(a + length, size - length + 1)
        buffer[a:a + length], buffer[b:b + length] = data[b:b + length], data[a:a + length]
        return bytes(buffer), f"bytes {a}-{a + length} swapped with {b}-{b + length}"
    raise ValueError(f"unknown mutation {mutation!r}; one of {MUTATIONS}")


def write_mutants(clean: dict[str, Path], folder: Path, count: int, seed: int) -> list[Mutant]:
    """``count`` mutants of the clean files (container name -> file): mutant i damages container i mod (number
    of containers) with mutation i mod 5 (every pair once in 30 with the six containers), drawing its damage
    from ``random.Random(seed * 100_003 + i)``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(clean)
    mutants = []
    for index in range(count):
        container = names[index % len(names)]
        mutation = MUTATIONS[index % len(MUTATIONS)]
        rng = random.Random(seed * 100_003 + index)
        data, detail = mutate(clean[container].read_bytes(), mutation, container, rng)
        path = folder / f"{container}-{mutation}-{index:03d}{CONTAINERS[container][0]}"
        path.write_bytes(data)
        mutants.append(Mutant(path, container, mutation, detail))
    return mutants
