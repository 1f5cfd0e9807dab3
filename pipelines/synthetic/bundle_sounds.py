"""Rebuild the bundled recordings (``pipelines/synthetic/sounds/``) from the original files.

    python -m pipelines.synthetic.bundle_sounds /path/to/shared/data

The generator mixes real recordings into its streams; they ship with the project, so every
user's footage is the footage the tests and benchmarks use. This tool is how the bundled
copies were made: every file ``SOUND_FILES`` names, read from ``<data>/sounds/`` (any
audio format with the same stem), mixed to mono at its own sample rate and written as Ogg
Vorbis (about 1 MB for all of them), with the licence files of each source folder beside them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.synthetic.audio import BUNDLED_SOUNDS, SOUND_FILES

VORBIS_COMPRESSION = 0.6  # libsndfile's 0 (best quality) .. 1 (smallest)
# Licence and attribution files kept beside the recordings of each source folder.
LICENSE_FILES = ("opensfx/license.txt", "opensfx/names_and_licenses.tsv", "blanket/SOUNDS_LICENSING.md",
                 "noise-of-life/README.md")
# The GPL texts of the Debian-packaged recordings (Debian keeps them in /usr/share/common-licenses).
GPL_TEXTS = {"tuxpaint/GPL-2": Path("/usr/share/common-licenses/GPL-2"),
             "micropolis/GPL-3": Path("/usr/share/common-licenses/GPL-3")}


def bundle(data: Path, out: Path = BUNDLED_SOUNDS) -> list[Path]:
    """Write every named recording under ``out``; returns the files written."""
    sounds = data / "sounds"
    if not sounds.is_dir():
        raise FileNotFoundError(f"{sounds}: no such folder (give the folder that holds sounds/)")
    written = []
    for rel in sorted({rel for names in SOUND_FILES.values() for rel in names}):
        target = out / rel
        sources = sorted((sounds / rel).parent.glob(f"{Path(rel).stem}.*"))
        if not sources:
            raise FileNotFoundError(f"{sounds / rel}: no recording with this name (any extension)")
        samples, rate = sf.read(str(sources[0]), dtype="float32", always_2d=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(target), np.ascontiguousarray(samples.mean(axis=1)), rate, format="OGG", subtype="VORBIS",
                 compression_level=VORBIS_COMPRESSION)
        written.append(target)
    for rel in LICENSE_FILES:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sounds / rel, out / rel)
    for rel, text in GPL_TEXTS.items():
        shutil.copyfile(text, out / rel)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the folder that holds sounds/ (the project's shared data)")
    args = parser.parse_args(argv)
    written = bundle(args.data)
    print(f"{len(written)} recordings, {sum(p.stat().st_size for p in written) / 1e6:.2f} MB, in {BUNDLED_SOUNDS}")


if __name__ == "__main__":
    main()
