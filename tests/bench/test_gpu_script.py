"""bench/gpu.sh --dry: the GPU benchmark's code paths on CPU at tiny sizes, so the script cannot rot unseen."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_the_gpu_benchmark_runs_dry_on_cpu_without_ray(tmp_path):
    table = tmp_path / "table.md"
    env = {**os.environ, "PYTHON": sys.executable, "EPG_GPU_BENCH_OUT": str(table), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--dry"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = table.read_text()
    assert text in done.stdout
    pretraining = re.search(r"\| pretraining \| tiny 32 px, batch 8 .*bf16 autocast, DDP \(1 rank, gloo\).*\| "
                            r"([\d.]+) samples/s; waiting for data ([\d.]+) %; pair mining ([\d.]+) %", text)
    assert pretraining, text
    samples, wait, mining = map(float, pretraining.groups())
    assert samples > 0 and 0 <= wait < 100 and 0 < mining < 100
    assert len(re.findall(r"\| mining \+ loss \| (topk|consensus), batch 64, bank (0|256) \| mining [\d.]+ ms", text)) == 4
    scoring = re.search(r"\| scoring \| .*\| ([\d.]+) clips/s \(([\d.]+)× the model alone, ([\d.]+) clips/s\)", text)
    assert scoring and float(scoring.group(1)) > 0 and float(scoring.group(3)) > 0, text
    assert "Ray imported: no" in text
