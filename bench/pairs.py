"""Benchmark: EPG label mining + multi-positive loss (forward and backward) against embedding banks.

For a global batch of N anchors (default 1,024) and banks of K samples (default 0, 16k
and 131k), times ``epg.pairs.pair_labels`` and ``epg.loss_margin.multi_positive_margin_loss``
(forward, then backward) and reports peak memory: on CPU the peak resident set size of a
fresh process per configuration (and its growth over the inputs already built), on GPU
``torch.cuda.max_memory_allocated``. Prints a table. Speed is measured here, never in tests.

    python bench/pairs.py                          # CPU
    python bench/pairs.py --device cuda            # GPU, when there is one
    python bench/pairs.py --rules topk adaptive --banks 0 16384
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import platform
import resource
import sys
import time

import torch
from results import Printed, command_line, update_results

from epg.bank import EmbeddingBank
from epg.config import LossConfig, PairConfig
from epg.loss_margin import multi_positive_margin_loss
from epg.pairs import pair_labels
from epg.samples import CandidateSet, Samples


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_samples(n: int, dim: int, streams: int, generator: torch.Generator, device: torch.device, grad: bool) -> Samples:
    v = torch.randn(n, dim, generator=generator).to(device).requires_grad_(grad)
    a = torch.randn(n, dim, generator=generator).to(device).requires_grad_(grad)
    stream = torch.randint(0, streams, (n,), generator=generator).to(device)
    t = torch.randint(0, 86_400, (n,), generator=generator).to(device)
    label = torch.randint(-1, 8, (n,), generator=generator).to(device)
    return Samples(v, a, stream, t, label)


def run_one(batch: int, bank_size: int, dim: int, chunk: int, rule: str, device_name: str, threads: int, repeats: int) -> dict:
    """One configuration, in its own process so its peak memory is its own."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    generator = torch.Generator().manual_seed(0)
    bank = EmbeddingBank(bank_size, block_rows=chunk)
    for start in range(0, bank_size, batch):
        bank.push(_random_samples(min(batch, bank_size - start), dim, 64, generator, device, grad=False))
    anchors = _random_samples(batch, dim, 64, generator, device, grad=True)
    pairs = PairConfig(mining=rule, warmup_epochs=0)  # type: ignore[arg-type]
    loss_config = LossConfig()
    candidates = CandidateSet([anchors] + bank.segments())
    # Warm-up on a small problem (kernel selection, allocator), then measure.
    small = CandidateSet([anchors])
    labels = pair_labels(anchors, small, pairs, loss_config.lam, 0, chunk)
    multi_positive_margin_loss(anchors, small, labels, loss_config, 1.0, "positive", chunk).loss.backward()
    anchors.v.grad = anchors.a.grad = None
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = _rss_mib()
    times = {"mine": [], "forward": [], "backward": []}
    for _ in range(repeats):
        start = time.perf_counter()
        labels = pair_labels(anchors, candidates, pairs, loss_config.lam, 0, chunk)
        _sync(device)
        mined = time.perf_counter()
        terms = multi_positive_margin_loss(anchors, candidates, labels, loss_config, 1.0, "positive", chunk)
        _sync(device)
        forward = time.perf_counter()
        terms.loss.backward()
        _sync(device)
        done = time.perf_counter()
        anchors.v.grad = anchors.a.grad = None
        times["mine"].append(mined - start)
        times["forward"].append(forward - mined)
        times["backward"].append(done - forward)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mib()
    best = {key: min(values) for key, values in times.items()}
    return {
        "bank": bank_size,
        "candidates": len(candidates),
        "rule": rule,
        **best,
        "total": best["mine"] + best["forward"] + best["backward"],
        "peak_mib": peak,
        "growth_mib": peak - base,
        "inputs_mib": base,
        "mined_per_anchor": float(labels.mined_per_anchor.float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1024, help="global batch (anchors)")
    parser.add_argument("--banks", type=int, nargs="+", default=[0, 16_384, 131_072])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=8_192, help="candidates per chunk (BankConfig.chunk_size)")
    parser.add_argument("--rules", nargs="+", default=["topk"], choices=["adaptive", "topk", "consensus", "quantile"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per configuration (best is shown)")
    parser.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.processor() or platform.machine()}, {args.threads} threads"
    report = Printed()
    report(f"EPG pairs bench: N={args.batch} anchors, d={args.dim}, chunk={args.chunk}, device={device} ({name}), torch {torch.__version__}")
    memory = "peak alloc MiB" if device == "cuda" else "peak RSS MiB"
    header = f"{'rule':<10}{'bank K':>9}{'cands':>9}{'mine s':>9}{'fwd s':>9}{'bwd s':>9}{'total s':>9}{'pairs/s':>11}{memory:>16}{'growth MiB':>12}{'mined/anc':>10}"
    report(header)
    report("-" * len(header))
    context = multiprocessing.get_context("spawn")
    for rule in args.rules:
        for bank in args.banks:
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                r = pool.submit(run_one, args.batch, bank, args.dim, args.chunk, rule, device, args.threads, args.repeats).result()
            rate = args.batch * r["candidates"] / r["total"]
            report(f"{rule:<10}{r['bank']:>9}{r['candidates']:>9}{r['mine']:>9.3f}{r['forward']:>9.3f}{r['backward']:>9.3f}"
                   f"{r['total']:>9.3f}{rate:>11.3g}{r['peak_mib']:>16.0f}{r['growth_mib']:>12.0f}{r['mined_per_anchor']:>10.2f}",
                   flush=True)
    if args.write_results:
        update_results("Pair mining and loss against bank size", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
