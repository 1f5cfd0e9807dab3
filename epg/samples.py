"""A set of embedded samples: (v, a, stream, t, label) rows, and candidate sets made of several.

Anchors (the global batch) and candidates (the global batch followed by the
bank) are both ``Samples``. Candidates stay a list of segments so the bank,
hundreds of thousands of rows, is never copied to build one big tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch


@dataclass(frozen=True)
class Samples:
    """Rows of embedded samples. v, a: [n, d] float; stream, t, label: [n] int64 (label −1 = none)."""

    v: torch.Tensor
    a: torch.Tensor
    stream: torch.Tensor
    t: torch.Tensor
    label: torch.Tensor

    def __post_init__(self) -> None:
        n = self.v.shape[0]
        if self.v.dim() != 2 or self.a.shape != self.v.shape:
            raise ValueError(f"Samples.v and .a must both be [n, d], got {tuple(self.v.shape)} and {tuple(self.a.shape)}")
        for name in ("stream", "t", "label"):
            value = getattr(self, name)
            if value.shape != (n,) or value.dtype != torch.int64:
                raise ValueError(f"Samples.{name} must be int64 [{n}], got {value.dtype} {tuple(value.shape)}")

    def __len__(self) -> int:
        return self.v.shape[0]

    def slice(self, start: int, stop: int) -> "Samples":
        return Samples(self.v[start:stop], self.a[start:stop], self.stream[start:stop], self.t[start:stop], self.label[start:stop])

    def detach(self) -> "Samples":
        return Samples(self.v.detach(), self.a.detach(), self.stream, self.t, self.label)


def pool_clips(samples: Samples) -> Samples:
    """One row per clip (stream, t), in (stream, t) order: the mean of its rows' v and a (a clip's two
    crops, each with its copy of the clip's audio), its first row's label. Differentiable in v and a."""
    key = torch.stack([samples.stream, samples.t], dim=1)
    clips, inverse = torch.unique(key, dim=0, return_inverse=True)
    count = torch.zeros(len(clips), dtype=samples.v.dtype, device=samples.v.device).index_add_(
        0, inverse, torch.ones_like(inverse, dtype=samples.v.dtype))
    v = torch.zeros(len(clips), samples.v.shape[1], dtype=samples.v.dtype, device=samples.v.device).index_add(
        0, inverse, samples.v) / count[:, None]
    a = torch.zeros(len(clips), samples.a.shape[1], dtype=samples.a.dtype, device=samples.a.device).index_add(
        0, inverse, samples.a) / count[:, None]
    first = torch.full((len(clips),), len(samples), dtype=torch.int64, device=samples.v.device).scatter_reduce(
        0, inverse, torch.arange(len(samples), device=samples.v.device), reduce="amin")
    return Samples(v, a, clips[:, 0].contiguous(), clips[:, 1].contiguous(), samples.label[first])


class CandidateSet:
    """Candidates j of the loss and of mining: segments in a fixed order (global batch, then bank).

    Global candidate index = segment offset + row. Chunks never cross a segment
    boundary and depend only on segment sizes, so every worker (and a single
    worker with the whole batch) cuts them identically.
    """

    def __init__(self, segments: Sequence[Samples]) -> None:
        self.segments = [s for s in segments if len(s) > 0]
        if not self.segments:
            raise ValueError("CandidateSet needs at least one non-empty segment")
        self.stream = torch.cat([s.stream for s in self.segments])
        self.t = torch.cat([s.t for s in self.segments])
        self.label = torch.cat([s.label for s in self.segments])

    def __len__(self) -> int:
        return int(self.stream.shape[0])

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, Samples]]:
        """(global offset, chunk) pairs covering all candidates in order."""
        offset = 0
        for segment in self.segments:
            for start in range(0, len(segment), chunk_size):
                chunk = segment.slice(start, min(start + chunk_size, len(segment)))
                yield offset + start, chunk
            offset += len(segment)
