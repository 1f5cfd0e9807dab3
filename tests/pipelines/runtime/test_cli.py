"""Shared command-line options (pipelines.runtime.cli), as the real job parsers use them."""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest

from pipelines.runtime.cli import add_deprecated_alias, add_output_option, add_ray_options
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "jobs"))

RAY_JOBS = ("ingest", "pretrain", "embed", "demo")
ALL_JOBS = RAY_JOBS + ("anomaly", "search", "localize")


def parser_of(job: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The job's real parser, captured when its ``parse_args`` (which builds it) parses."""
    module = importlib.import_module(job)
    captured: list[argparse.ArgumentParser] = []

    def capture(self, args=None, namespace=None):
        captured.append(self)
        raise SystemExit(0)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(SystemExit):
            module.parse_args([])
    return captured[0]


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if action.help != argparse.SUPPRESS}


@pytest.mark.parametrize("job", ALL_JOBS)
def test_every_job_spells_its_options_one_way(job, monkeypatch):
    found = options(parser_of(job, monkeypatch))
    assert ("--run-dir" if job == "pretrain" else "--output") in found
    assert "--out" not in found
    assert ("--k" in found) == (job == "search")  # the number of results; elsewhere --k is a deprecated alias
    assert ("--address" in found) == (job in RAY_JOBS)


def test_a_deprecated_spelling_warns_and_reaches_the_new_option(capsys):
    parser = argparse.ArgumentParser(prog="job")
    parser.add_argument("--sigma", type=float, default=2.0)
    add_deprecated_alias(parser, "--k", "--sigma")
    assert parser.parse_args([]).sigma == 2.0
    with pytest.warns(FutureWarning, match="--k is deprecated; use --sigma"):
        assert parser.parse_args(["--k", "3"]).sigma == 3.0
    assert "job: warning: --k is deprecated; use --sigma" in capsys.readouterr().err
    assert "--k" not in parser.format_help()


def test_shared_groups():
    parser = argparse.ArgumentParser()
    add_output_option(parser, "where")
    add_ray_options(parser)
    args = parser.parse_args(["-o", "x", "--address", "auto", "--quiet"])
    assert (args.output, args.address, args.quiet) == ("x", "auto", True)
    quiet_less = argparse.ArgumentParser()
    add_ray_options(quiet_less, progress=False)
    assert "--quiet" not in options(quiet_less)
