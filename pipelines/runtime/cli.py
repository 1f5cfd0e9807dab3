"""What every job's command line shares: the Ray and output options, and renamed flags that still work.

    add_ray_options(parser)             --address (and --quiet)
    add_output_option(parser, help)     --output / -o
    add_deprecated_alias(parser, "--k", "--sigma")   the old spelling, with a warning naming the new one

Defaults of a job's own flags come from its config dataclass (``Config.default_of``), so a
default lives in one place.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any


def add_ray_options(parser: argparse.ArgumentParser, progress: bool = True) -> None:
    """``--address`` (a running cluster; default RAY_ADDRESS or a new local Ray) and, for jobs that
    draw progress bars, ``--quiet`` (none)."""
    group = parser.add_argument_group("Ray")
    group.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a new local Ray)")
    if progress:
        group.add_argument("--quiet", action="store_true", help="no progress bars")


def add_output_option(parser: argparse.ArgumentParser, help: str, required: bool = True, default: str | None = None) -> None:
    """``--output`` / ``-o``: where the job writes (a path or URI)."""
    parser.add_argument("--output", "-o", required=required, default=default, help=help)


def add_skip_bad_shards_option(parser: argparse.ArgumentParser, default: bool, what: str = "files") -> None:
    """``--skip-bad-shards``: go on without the dataset's damaged manifests and Parquet files (each named)
    instead of stopping at the first with an error that names it."""
    parser.add_argument("--skip-bad-shards", action="store_true", default=default,
                        help=f"leave out {what} whose manifest or Parquet file cannot be read (each named in the "
                             "output) instead of stopping with an error that names it")


class _DeprecatedAlias(argparse.Action):
    """Stores into the new flag's destination and warns that the old spelling is deprecated."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        message = f"{option_string} is deprecated; use {self.new}"
        warnings.warn(message, FutureWarning, stacklevel=2)
        print(f"{parser.prog}: warning: {message}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept ``old`` as a deprecated spelling of the already-defined flag ``new`` (same type, same destination)."""
    action = next(a for a in parser._actions if new in a.option_strings)  # noqa: SLF001 (argparse has no public lookup)
    parser.add_argument(old, action=_DeprecatedAlias, new=new, dest=action.dest, type=action.type,
                        nargs=action.nargs, default=argparse.SUPPRESS, help=argparse.SUPPRESS, metavar=action.metavar)
