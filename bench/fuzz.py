"""Fuzzed media (issue 18): seeded mutants of real containers through ingest and scoring, as a user runs them.

    python bench/fuzz.py                          # 60 mutants of 20-s recordings, seed 0 (about 5 min)
    python bench/fuzz.py --mutants 300 --seed 1   # a longer campaign
    python bench/fuzz.py --write-results

A 20-s stream of the synthetic generator is recoded into mp4 (H.264 + AAC, B-frames), mkv,
webm (VP9 + Opus, AV1 + Opus), MPEG-TS and AVI (MPEG-4 + MP3) (``pipelines.synthetic.damage``),
and ``--mutants`` damaged copies are written (bit flips, zeroed spans, truncations, damaged
headers / moov / EBML / PAT+PMT / RIFF chunks, swapped segments), every container and mutation in
turn, plus one input that never delivers a byte (a named pipe: a read that blocks in native code).
Then, each as a subprocess with its own local Ray:

1. ``jobs/ingest.py`` over the clean files alone (the anchor), then over clean files + mutants;
2. ``jobs/embed.py --videos`` with a random-init tiny checkpoint, the same two runs.

Checked for each job: it ends (a wall limit; a window or file whose decode passes
``--decode-timeout`` is stopped and named), exits 1, every clean file's rows equal the anchor's,
every mutant is complete (with rows: ingest gives every second one, scoring none to clips without audio or
video) or has a failed manifest whose errors name the file, and no
temporary file, staging folder or stream with files but no complete manifest is left behind.
Reported per container and per mutation: mutants, with rows, failed, decodes stopped (hung /
crashed), undecodable packets left out, and the worst decode time of one mutant (the sum of its
windows' decode times, from its manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402
from pipelines.synthetic.damage import CONTAINERS, MUTATIONS, recode, write_mutants  # noqa: E402
from pipelines.train.checkpoint import write_random_init  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_job(script: str, args: list[str], limit: float) -> tuple[int, float, str]:
    """A job as a user runs it (its own local Ray); (exit code, wall seconds, output). A job past ``limit`` is
    killed (exit code -9): the run did not end."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    began = time.monotonic()
    job = subprocess.Popen([sys.executable, str(REPO / "jobs" / script), "--quiet", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        text = job.communicate(timeout=limit)[0]
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, 9)
        text = job.communicate()[0] + f"\n(killed after {limit:.0f} s)"
    return job.returncode, time.monotonic() - began, text


def manifests(root: Path) -> dict[str, dict]:
    found = {}
    for path in root.glob("stream_id=*/manifest.json"):
        found[path.parent.name.split("=", 1)[1]] = json.loads(path.read_text())
    return found


def stream_table(root: Path, stream_id: str):
    data = manifests(root)[stream_id]
    tables = [pq.read_table(root / f"stream_id={stream_id}" / name) for name in data["files"]]
    import pyarrow as pa

    return pa.concat_tables(tables).sort_by("t")


def leftovers(root: Path) -> list[str]:
    """Anything a reader could mistake for output, or that an interrupted write left: temporaries, staging,
    Parquet files of a stream whose manifest is not complete, or files its manifest does not list."""
    found = [str(p) for p in root.rglob(".tmp-*")]
    found += [str(p) for p in root.glob("_staging*")]
    for stream_id, data in manifests(root).items():
        files = {p.name for p in (root / f"stream_id={stream_id}").glob("*.parquet")}
        listed = set(data["files"]) if data["status"] == "complete" else set()
        found += [f"{stream_id}/{name}" for name in sorted(files ^ listed)]
    return found


def check_run(root: Path, anchor: Path, clean_ids: list[str], mutant_paths: dict[str, Path]) -> dict:
    """What the fuzzed run left, against the anchor run of the clean files."""
    found = manifests(root)
    equal = sum(stream_table(root, s).equals(stream_table(anchor, s)) for s in clean_ids
                if found.get(s, {}).get("status") == "complete")
    per_mutant = {}
    for stream_id, path in mutant_paths.items():
        data = found.get(stream_id)
        if data is None:
            per_mutant[stream_id] = {"outcome": "no manifest"}
            continue
        errors = data.get("errors", [])
        named = bool(errors) and all(str(path) in e for e in errors)
        outcome = ("rows" if data["status"] == "complete" else
                   "failed, named" if data["status"] == "failed" and named else f"{data['status']} (unnamed)")
        joined = " ".join(errors)
        per_mutant[stream_id] = {
            "outcome": outcome, "rows": data.get("rows", 0), "damaged": data.get("damaged_packets", 0),
            "hung": joined.count("did not finish within"), "crashed": joined.count("crashed (its process died"),
            "decode_s": data.get("decode_seconds", 0.0), "reason": errors[0][len(str(path)) + 2:][:90] if errors else "",
        }
    return {"equal": equal, "mutants": per_mutant, "leftovers": leftovers(root)}


def table(report: Printed, title: str, results: dict, mutants: dict[str, tuple[str, str]]) -> None:
    report(f"{title}:")
    report("")
    report("| group | mutants | complete (rows) | failed, file and reason named | other | decodes stopped (hung / crashed) "
           "| undecodable packets left out | worst decode s of one mutant |")
    report("|---|---:|---:|---:|---:|---|---:|---:|")
    groups: dict[str, list[dict]] = defaultdict(list)
    for stream_id, entry in results["mutants"].items():
        container, mutation = mutants[stream_id]
        groups[f"container {container}"].append(entry)
        groups[f"mutation {mutation}"].append(entry)
        groups["all"].append(entry)
    for name in sorted(groups, key=lambda g: (g == "all", g)):
        entries = groups[name]
        rows = sum(e["outcome"] == "rows" for e in entries)
        named = sum(e["outcome"] == "failed, named" for e in entries)
        hung, crashed = sum(e.get("hung", 0) for e in entries), sum(e.get("crashed", 0) for e in entries)
        worst = max(e.get("decode_s", 0.0) for e in entries)
        total = sum(e.get("rows", 0) for e in entries if e["outcome"] == "rows")
        report(f"| {name} | {len(entries)} | {rows} ({total}) | {named} | {len(entries) - rows - named} | {hung} / {crashed} | "
               f"{sum(e.get('damaged', 0) for e in entries)} | {worst:.1f} |")
    report("")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=int, default=20, help="length of the clean recordings")
    parser.add_argument("--decode-timeout", type=float, default=30.0,
                        help="the jobs' bound on one window's decode or one file's inspection (s)")
    parser.add_argument("--limit", type=float, default=1800.0, help="a job running longer than this did not end (s)")
    parser.add_argument("--work", help="working folder (default: a new temporary one)")
    parser.add_argument("--write-results", action="store_true", help="also write the tables into bench/RESULTS.md")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="epg-fuzz-"))
    footage = generate(SyntheticConfig(out=work / "source", minutes=args.seconds / 60, seed=5, size=(160, 90),
                                       views=("train",)))
    clean_dir, mutant_dir = work / "clean", work / "mutants"
    clean_dir.mkdir(parents=True, exist_ok=True)
    clean = {name: recode(footage.videos["train"], clean_dir / f"clean-{name}{CONTAINERS[name][0]}", name)
             for name in CONTAINERS}
    made = write_mutants(clean, mutant_dir, args.mutants, args.seed)
    fifo = mutant_dir / "never-delivers.mp4"
    if not fifo.exists():
        os.mkfifo(fifo)
    mutants = {m.path.stem: (m.container, m.mutation) for m in made} | {fifo.stem: ("pipe", "no bytes")}
    mutant_paths = {m.path.stem: m.path for m in made} | {fifo.stem: fifo}
    clean_ids = [p.stem for p in clean.values()]

    checkpoint = write_random_init(work / "run")  # the scorer needs a model: random init

    bound = ["--decode-timeout", str(args.decode_timeout), "--window-seconds", "5"]
    jobs = {
        "ingest": ("ingest.py", lambda out, inputs: ["--crop-size", "32", *bound, "--output", str(out), "--input",
                                                     *map(str, inputs)]),
        "embed --videos": ("embed.py", lambda out, inputs: [*bound, "--checkpoint", str(checkpoint), "--output",
                                                             str(out), "--videos", *map(str, inputs)]),
    }
    report = Printed()
    report(f"{len(made)} mutants (seed {args.seed}) of {args.seconds}-s recordings in {len(CONTAINERS)} containers "
           f"({', '.join(CONTAINERS)}), mutations {', '.join(MUTATIONS)}, plus one named pipe that never delivers; "
           f"decode bound {args.decode_timeout:g} s, 5-s windows.")
    report("")
    for name, (script, job_args) in jobs.items():
        slug = name.split()[0]
        code_a, anchor_s, text_a = run_job(script, job_args(work / f"{slug}-anchor", [clean_dir]), args.limit)
        if code_a != 0:
            raise SystemExit(f"{name} of the clean files failed:\n{text_a[-3000:]}")
        code, wall, text = run_job(script, job_args(work / f"{slug}-fuzzed", [clean_dir, mutant_dir]), args.limit)
        checked = check_run(work / f"{slug}-fuzzed", work / f"{slug}-anchor", clean_ids, mutant_paths)
        ended = code != -9
        report(f"**{name}**: {'ended' if ended else 'DID NOT END'} in {wall:.1f} s (clean files alone: {anchor_s:.1f} s), "
               f"exit code {code} (expected 1); clean files equal to the clean run: {checked['equal']} of "
               f"{len(clean_ids)}; left behind: {len(checked['leftovers'])} {checked['leftovers'][:3] or ''}")
        report("")
        table(report, f"{name}, per group", checked, mutants)
        unnamed = {k: v for k, v in checked["mutants"].items() if v["outcome"] not in ("rows", "failed, named")}
        if unnamed:
            report(f"not as expected: {unnamed}")
        reasons = defaultdict(int)
        for entry in checked["mutants"].values():
            if entry["outcome"] == "failed, named":
                reasons[_reason_kind(entry["reason"])] += 1
        report("Failure reasons: " + "; ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
        report("")
    if args.write_results:
        update_results("Fuzzed media", report.text, command_line(__file__, sys.argv[1:]))


def _reason_kind(reason: str) -> str:
    """A failure reason without its numbers and window, for counting kinds."""
    for marker in ("did not finish within", "crashed", "truncated recording", "not a readable video container",
                   "no video track", "cannot decode video", "video codec not supported", "has no decodable frames",
                   "shorter than", "only", "Invalid data"):
        if marker in reason:
            return marker
    return reason[:40]


if __name__ == "__main__":
    main()
