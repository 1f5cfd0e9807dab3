"""Real-time factor of the synthetic stream generator.

    python bench/synthetic.py                 # the two standard cases, 10 minutes each
    python bench/synthetic.py --minutes 2     # quicker
    python bench/synthetic.py --case 4h       # a 4-hour 320x180 single-view stream

Prints a table: stream seconds, wall seconds, real-time factor (stream seconds
per wall second; all views of a case are written in one pass, so the factor
is per set of views), output size, peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results import Printed, command_line, update_results  # noqa: E402

from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402

CASES = {
    "320x180x3": dict(size=(320, 180), fps=10.0, views=("train", "similar", "challenging")),
    "1280x720x1": dict(size=(1280, 720), fps=30.0, views=("train",)),
    "320x180x1": dict(size=(320, 180), fps=10.0, views=("train",)),
}


def run(name: str, minutes: float, out: Path, seed: int) -> dict:
    kw = CASES[name]
    d = out / name
    t0 = time.perf_counter()
    res = generate(SyntheticConfig(out=d, minutes=minutes, seed=seed, **kw))
    wall = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in res.videos.values())
    return {
        "case": f"{kw['size'][0]}x{kw['size'][1]} {kw['fps']:g} fps x{len(kw['views'])} view(s)",
        "stream_s": res.seconds,
        "wall_s": wall,
        "rtf": res.seconds / wall,
        "mb": size / 1e6,
        "events": sum(res.event_counts.values()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--case", action="append", choices=sorted(CASES) + ["4h"], help="default: 320x180x3 and 1280x720x1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "-o", type=Path, default=None, help="keep the streams here (default: a temp dir, deleted)")
    p.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = p.parse_args(argv)
    cases = args.case or ["320x180x3", "1280x720x1"]
    out = args.output or Path(tempfile.mkdtemp(prefix="synthetic-bench-"))
    rows = []
    try:
        for c in cases:
            if c == "4h":
                rows.append(run("320x180x1", 240.0, out, args.seed))
            else:
                rows.append(run(c, args.minutes, out, args.seed))
            r = rows[-1]
            print(f"done {r['case']}: {r['rtf']:.2f}x", file=sys.stderr, flush=True)
    finally:
        if args.output is None:
            shutil.rmtree(out, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = Printed()
    report(f"\nsynthetic generator, {os.cpu_count()} CPU(s) visible, peak RSS {peak_mb:.0f} MB")
    report(f"{'case':<32} {'stream s':>9} {'wall s':>8} {'RTF':>7} {'MB':>8} {'events':>7}")
    for r in rows:
        report(f"{r['case']:<32} {r['stream_s']:>9.0f} {r['wall_s']:>8.1f} {r['rtf']:>6.2f}x {r['mb']:>8.1f} {r['events']:>7}")
    if args.write_results:
        update_results("Synthetic generator speed", report.text,
                       command_line(__file__, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
