"""Seeded synthetic surveillance streams (DESIGN §6) with per-second labels (§3.3).

    python -m pipelines.synthetic --output DIR --minutes M --seed S --size 320x180 \
        --fps 10 --views train,similar,challenging [--scene N] [--no-anomalies] [--rate-scale X]

writes ``DIR/<view>.mp4`` (H.264 + AAC 44.1 kHz mono), ``DIR/labels.parquet``,
``DIR/events.json`` and ``DIR/config.json``.  See ``README.md`` in this folder.
``damage`` recodes such footage into other containers and writes seeded damaged copies of it.

May import: pipelines.runtime, epg
"""

from .classes import ANOMALY_CLASSES, CLASSES, class_names
from .config import VIEW_NAMES, GeneratedStreams, SyntheticConfig, parse_size, parse_views
from .generator import build_timeline, generate, labels_table

__all__ = [
    "ANOMALY_CLASSES",
    "CLASSES",
    "VIEW_NAMES",
    "GeneratedStreams",
    "SyntheticConfig",
    "build_timeline",
    "class_names",
    "generate",
    "labels_table",
    "parse_size",
    "parse_views",
]
