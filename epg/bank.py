"""Distributed positive mining: the cross-worker gather and the FIFO embedding bank.

Each step every worker all-gathers (v, a, stream, t, label) of its local batch,
so all workers see the same global batch in rank order. The gathered copy
carries no gradient, so the local slice is replaced by the local tensors
themselves (the open_clip pattern): each worker's loss is then the full global
loss, and its backward yields exactly this worker's share of the gradient.
Summing the shares over workers (``sum_gradients``, or DDP's average of
``loss * world_size``) gives the gradient of one worker holding the whole batch.

The bank keeps the last K gathered samples, detached. Every worker pushes the
same gathered rows in the same order, so the bank is identical on every rank
without any communication of its own (it lives on each worker's device:
K × d × 2 floats, 0.5 GiB for K = 131,072 and d = 512). A clip met again in a
later epoch finds its own older embedding in the bank: same (stream, t), so an
aligned (TPG) positive, never a negative.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from epg.config import BankConfig
from epg.samples import Samples


def world(group: Any = None) -> tuple[int, int]:
    """(rank, world size) in ``group``; (0, 1) without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def gather_with_grad(x: torch.Tensor, group: Any = None) -> torch.Tensor:
    """All-gather along dim 0 in rank order; the local slice is ``x`` itself and keeps its gradient.

    Ranks may hold different numbers of rows (the last batch of an epoch): sizes are
    gathered first and rows padded for the collective.
    """
    rank, size = world(group)
    if size == 1:
        return x
    count = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count, group=group)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = x.detach()
    if x.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    pieces = [part[:n] for part, n in zip(parts, sizes)]
    pieces[rank] = x
    return torch.cat(pieces)


def gather_samples(local: Samples, group: Any = None) -> Samples:
    """The global batch: every worker's samples in rank order, local embeddings keeping their gradient."""
    return Samples(
        gather_with_grad(local.v, group),
        gather_with_grad(local.a, group),
        gather_with_grad(local.stream, group),
        gather_with_grad(local.t, group),
        gather_with_grad(local.label, group),
    )


def sum_gradients(module: nn.Module, group: Any = None) -> None:
    """Sum parameter gradients over workers (use instead of DDP; with DDP backward ``loss * world_size``)."""
    _, size = world(group)
    if size == 1:
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM, group=group)


class EmbeddingBank:
    """FIFO of the last ``capacity`` gathered samples (detached), extra candidates for every anchor.

    Rows live in blocks of at most ``block_rows`` (oldest first) and are never written
    in place: a step's loss graph keeps views of the bank as checkpoint inputs, and
    the next push must not change them before that step's backward. A push merges
    into the newest block by concatenation (a new tensor) and drops or slices the
    oldest; blocks double as the loss's candidate chunks, so ``block_rows`` should be
    the loss's ``chunk_size``.
    """

    def __init__(self, capacity: int, block_rows: int = 8_192) -> None:
        if capacity < 0:
            raise ValueError(f"EmbeddingBank.capacity must be >= 0, got {capacity}")
        if block_rows < 1:
            raise ValueError(f"EmbeddingBank.block_rows must be >= 1, got {block_rows}")
        self.capacity = capacity
        self.block_rows = block_rows
        self.blocks: list[Samples] = []

    @classmethod
    def from_config(cls, config: BankConfig) -> "EmbeddingBank":
        """A bank of ``config.size`` rows whose blocks are the loss's chunks."""
        return cls(config.size, config.chunk_size)

    def __len__(self) -> int:
        return sum(len(block) for block in self.blocks)

    def segments(self) -> list[Samples]:
        """The stored rows as blocks, oldest first: a step's candidate order, identical on every rank."""
        return list(self.blocks)

    def samples(self) -> Samples | None:
        """All stored rows in one copy, oldest first (None when empty)."""
        if not self.blocks:
            return None
        return _concat(self.blocks)

    @torch.no_grad()
    def push(self, samples: Samples) -> None:
        """Append rows (detached); the oldest rows beyond ``capacity`` leave."""
        if self.capacity == 0 or len(samples) == 0:
            return
        samples = samples.detach()
        if len(samples) > self.capacity:
            samples = samples.slice(len(samples) - self.capacity, len(samples))
        start = 0
        if self.blocks and len(self.blocks[-1]) < self.block_rows:
            take = min(self.block_rows - len(self.blocks[-1]), len(samples))
            self.blocks[-1] = _concat([self.blocks[-1], samples.slice(0, take)])
            start = take
        for begin in range(start, len(samples), self.block_rows):
            self.blocks.append(_concat([samples.slice(begin, min(begin + self.block_rows, len(samples)))]))
        excess = len(self) - self.capacity
        while excess > 0:
            oldest = self.blocks[0]
            if len(oldest) <= excess:
                self.blocks.pop(0)
                excess -= len(oldest)
            else:
                self.blocks[0] = oldest.slice(excess, len(oldest))
                excess = 0

    def state_dict(self) -> dict[str, Any]:
        stored = self.samples()
        rows = {} if stored is None else {"v": stored.v, "a": stored.a, "stream": stored.stream, "t": stored.t, "label": stored.label}
        # The block layout is the loss's candidate chunking: restoring it keeps a resumed run bit-identical.
        return {"capacity": self.capacity, "block_sizes": [len(block) for block in self.blocks], **rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"EmbeddingBank: saved capacity {state['capacity']} != {self.capacity}")
        self.blocks = []
        if "v" not in state:
            return
        rows = Samples(state["v"], state["a"], state["stream"], state["t"], state["label"])
        sizes = [int(n) for n in state.get("block_sizes", [])]
        if sum(sizes) != len(rows) or any(n > self.block_rows for n in sizes):
            self.push(rows)  # no (usable) layout saved: re-block as one push would
            return
        start = 0
        for n in sizes:
            self.blocks.append(_concat([rows.slice(start, start + n)]))
            start += n


def _concat(parts: list[Samples]) -> Samples:
    """A new Samples owning fresh storage (never a view of a caller's tensors)."""
    return Samples(*(torch.cat([getattr(p, name) for p in parts]) for name in ("v", "a", "stream", "t", "label")))
