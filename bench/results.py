"""Write a benchmark's printed summary into its section of bench/RESULTS.md.

Every benchmark takes ``--write-results``: it prints as usual and, with the flag, also replaces
the "Latest run" slot of its section, the text between ``<!-- bench:<section> -->`` and
``<!-- /bench:<section> -->``. This is how the benchmarks regenerate RESULTS.md without touching
the history kept around the slots. The slot holds the printed text in a fenced block, after a
line that names the command, the UTC time and the machine, because figures from this shared
host only mean something next to those three.
"""

from __future__ import annotations

import datetime
import os
import shlex
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


class Printed:
    """Prints lines and keeps them, so the text written to RESULTS.md is exactly the text printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "", flush: bool = False) -> None:
        print(line, flush=flush)
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def command_line(script: str, argv: Sequence[str]) -> str:
    """``python bench/<script> <argv>``, quoted as a shell would need it."""
    return shlex.join(["python", f"bench/{Path(script).name}", *argv])


def machine() -> str:
    """``<n> cores, <GPU name>`` (or ``no GPU``; ``GPU unknown`` when torch does not import)."""
    try:
        import torch
    except ImportError:
        gpu = "GPU unknown (torch does not import)"
    else:
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores, {gpu}"


def update_results(section: str, text: str, command: str, path: Path | str = RESULTS) -> None:
    """Replace the slot of ``section`` in ``path`` with ``text``; append the section if it has no markers."""
    if "--" in section:
        raise ValueError(f"a section name inside an HTML comment cannot hold '--': {section!r}")
    path = Path(path)
    begin, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = text.strip("\n")
    fence = "```" if "```" not in body else "~~~~"
    slot = f"\n`{command}`, run {when} on {machine()}:\n\n{fence}text\n{body}\n{fence}\n"
    old = path.read_text()
    start = old.find(begin)
    if start < 0:
        new = old.rstrip("\n") + f"\n\n## {section}\n\n{begin}{slot}{end}\n"
    else:
        stop = old.find(end, start)
        if stop < 0:
            raise ValueError(f"{path}: {begin} has no closing {end}")
        new = old[: start + len(begin)] + slot + old[stop:]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(new)
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
