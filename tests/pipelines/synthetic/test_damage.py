"""Damaged recordings on purpose: clean containers that decode, and mutants that are seeded, damaged as named."""

from __future__ import annotations

import random

import av
import pytest

from pipelines.synthetic.damage import CONTAINERS, MUTATIONS, _header_offsets, mutate, recode, write_mutants
from tests.media import Pattern, write_pattern


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("damage")
    source = write_pattern(folder / "source.mp4", Pattern(seconds=3, size=(64, 48), tone_hz=440.0))
    return {name: recode(source, folder / f"clean-{name}{suffix}", name) for name, (suffix, *_) in CONTAINERS.items()}


def test_every_clean_container_holds_the_stream_in_its_codecs(clean):
    for name, path in clean.items():
        _, fmt, vcodec, acodec, _ = CONTAINERS[name]
        with av.open(str(path)) as container:
            assert fmt in container.format.name.split(",")
            video, audio = container.streams.video[0], container.streams.audio[0]
            decoders = {"libx264": {"h264"}, "libvpx-vp9": {"vp9", "libvpx-vp9"}, "libsvtav1": {"av1", "libdav1d"},
                        "mpeg4": {"mpeg4"}}
            assert video.codec_context.name in decoders[vcodec], name
            assert acodec.removeprefix("lib").replace("mp3lame", "mp3") in audio.codec_context.name
            assert sum(1 for _ in container.decode(video=0)) == 30


def test_headers_are_found_in_every_container(clean):
    for name, path in clean.items():
        offsets = _header_offsets(path.read_bytes(), CONTAINERS[name][1])
        assert offsets and all(0 < o < path.stat().st_size for o in offsets), name


def test_mutants_are_seeded_and_damaged_as_named(clean, tmp_path):
    first = write_mutants(clean, tmp_path / "a", 10, seed=3)
    again = write_mutants(clean, tmp_path / "b", 10, seed=3)
    other = write_mutants(clean, tmp_path / "c", 10, seed=4)
    assert [m.path.read_bytes() for m in first] == [m.path.read_bytes() for m in again]
    assert [m.path.read_bytes() for m in first] != [m.path.read_bytes() for m in other]
    assert {m.mutation for m in first} == set(MUTATIONS) and {m.container for m in first} == set(CONTAINERS)
    for mutant in first:
        data, damaged = clean[mutant.container].read_bytes(), mutant.path.read_bytes()
        assert mutant.path.name.startswith(f"{mutant.container}-{mutant.mutation}-")
        if mutant.mutation == "truncate":
            assert data.startswith(damaged) and len(damaged) < len(data)
        else:
            assert len(damaged) == len(data) and damaged != data
        if mutant.mutation == "swap":
            assert sorted(damaged) == sorted(data)  # the same bytes, elsewhere


def test_an_unknown_mutation_is_refused(clean):
    with pytest.raises(ValueError, match="unknown mutation 'melt'"):
        mutate(b"x" * 1000, "melt", "mp4", random.Random(0))
