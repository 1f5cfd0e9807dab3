import pytest
import torch

from epg.bank import EmbeddingBank, gather_samples, sum_gradients, world
from epg.config import BankConfig
from epg.samples import CandidateSet, Samples


def rows(start: int, n: int, d: int = 3) -> Samples:
    index = torch.arange(start, start + n)
    x = index.float()[:, None].expand(n, d).clone()
    return Samples(x, -x, index % 2, index, index % 3)


def test_fifo_keeps_the_last_rows_in_order():
    bank = EmbeddingBank(capacity=7, block_rows=3)
    assert len(bank) == 0 and bank.samples() is None and bank.segments() == []
    bank.push(rows(0, 2))
    bank.push(rows(2, 4))
    assert len(bank) == 6 and bank.samples().t.tolist() == list(range(6))
    bank.push(rows(6, 5))
    assert len(bank) == 7 and bank.samples().t.tolist() == list(range(4, 11))
    assert all(len(block) <= 3 for block in bank.segments())
    assert torch.equal(bank.samples().a[:, 0], -torch.arange(4.0, 11.0))
    bank.push(rows(100, 20))  # more than the capacity at once
    assert bank.samples().t.tolist() == list(range(113, 120))
    assert len(EmbeddingBank(0)) == 0
    configured = EmbeddingBank.from_config(BankConfig(size=100, chunk_size=16))
    assert (configured.capacity, configured.block_rows) == (100, 16)


def test_push_detaches_and_never_writes_in_place():
    bank = EmbeddingBank(capacity=4, block_rows=4)
    v = torch.ones(2, 3, requires_grad=True)
    bank.push(Samples(v * 2, v * 3, torch.zeros(2, dtype=torch.int64), torch.arange(2), torch.zeros(2, dtype=torch.int64)))
    held = bank.segments()[0].v
    before = held.clone()
    bank.push(rows(5, 4))
    assert not held.requires_grad and torch.equal(held, before)  # an earlier step's view is untouched


def test_state_dict_round_trip():
    bank = EmbeddingBank(capacity=5, block_rows=2)
    bank.push(rows(0, 8))
    other = EmbeddingBank(capacity=5, block_rows=3)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.samples().v, bank.samples().v) and other.samples().t.tolist() == [3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="capacity"):
        EmbeddingBank(capacity=6).load_state_dict(bank.state_dict())


def test_single_process_gather_is_identity():
    local = rows(0, 3)
    assert world() == (0, 1)
    assert gather_samples(local).v is local.v
    sum_gradients(torch.nn.Linear(2, 2))  # no process group: nothing to do


def test_candidate_chunks_follow_segments():
    candidates = CandidateSet([rows(0, 5), rows(5, 0), rows(5, 4)])
    chunks = [(offset, len(chunk)) for offset, chunk in candidates.chunks(3)]
    assert chunks == [(0, 3), (3, 2), (5, 3), (8, 1)]
    assert candidates.t.tolist() == list(range(9))
