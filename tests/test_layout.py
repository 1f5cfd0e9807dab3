"""The layout stays true: imports run downward only, as the packages' docstrings declare.

Every subpackage of ``pipelines`` ends its docstring with a ``May import:`` line; the order of
the stages is the one ``pipelines/__init__.py`` gives (``demo -> ... -> epg``). These tests
read every module's imports (lazy ones inside functions included) and fail on one that goes
up or sideways, on a declaration that allows an upward import, and on ``epg`` reaching for Ray
or the pipelines.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PIPELINES = REPO / "pipelines"


def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Absolute names of every module ``path`` (under ``root``) imports, relative imports resolved, at any depth."""
    package = ".".join(path.relative_to(root).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pipelines import media`
    return found


def stage_order() -> list[str]:
    """The stages from the top down, as pipelines/__init__.py declares them (``demo -> ... -> epg``)."""
    doc = importlib.import_module("pipelines").__doc__ or ""
    match = re.search(r"in this order: ([\w\s>-]+?)(?:;|\.)", doc)
    assert match, "pipelines/__init__.py must declare the order of the stages ('in this order: a -> b -> epg')"
    return [name.strip() for name in match.group(1).split("->")]


def declared_imports(package: str) -> set[str]:
    """The ``May import:`` line of a subpackage's docstring, as top-level names (``pipelines.media`` -> ``media``)."""
    doc = importlib.import_module(f"pipelines.{package}").__doc__ or ""
    match = re.search(r"May import:(.*?)(?:\n\s*\n|\Z)", doc, re.S)
    assert match, f"pipelines/{package}/__init__.py must say what it may import ('May import: ...')"
    names = {n.strip().removeprefix("pipelines.") for n in match.group(1).replace("\n", " ").split(",")}
    return {n for n in names if n}


def subpackages() -> list[str]:
    return sorted(p.name for p in PIPELINES.iterdir() if (p / "__init__.py").is_file())


def pipelines_target(module: str) -> str | None:
    """The subpackage a ``pipelines.*`` import lands in (None for other modules)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pipelines" and len(parts) > 1 else None


def test_every_stage_declares_what_it_may_import_and_only_lower_stages():
    order = stage_order()
    assert order[-1] == "epg"
    standalone = {"synthetic"}
    assert set(subpackages()) == set(order[:-1]) | standalone, "every subpackage is a stage in the declared order"
    for package in subpackages():
        allowed = declared_imports(package)
        assert "epg" in allowed
        if package in standalone:
            assert allowed <= {"runtime", "media", "epg"}, f"{package} stands alone (the shared runtime at most)"
            continue
        lower = set(order[order.index(package) + 1:])
        used_standalone = standalone if package == "demo" else set()  # the main job generates its footage
        upward = sorted(allowed - lower - used_standalone)
        assert not upward, f"pipelines/{package} declares imports of {upward}, which are not below it"


@pytest.mark.parametrize("package", subpackages())
def test_modules_import_only_their_own_package_and_what_it_declares(package):
    allowed = declared_imports(package) | {package}
    wrong = []
    for path in sorted((PIPELINES / package).rglob("*.py")):
        for module in sorted(imported_modules(path)):
            target = pipelines_target(module)
            if module.startswith("jobs") or module.startswith("bench") or module.startswith("tests"):
                wrong.append(f"{path.relative_to(REPO)} imports {module}")
            elif target is not None and target not in allowed:
                wrong.append(f"{path.relative_to(REPO)} imports {module} (pipelines/{package} may import "
                             f"{', '.join(sorted(declared_imports(package)))})")
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_the_library_never_imports_ray_or_the_pipelines():
    wrong = [f"{path.relative_to(REPO)} imports {module}"
             for path in sorted((REPO / "epg").rglob("*.py"))
             for module in sorted(imported_modules(path))
             if module.split(".")[0] in {"ray", "pipelines", "jobs", "bench", "tests"}]
    assert not wrong, "\n".join(wrong)


def test_an_upward_import_is_caught(tmp_path):
    """The checker itself: a module of ``media`` that imports the scoring stage lazily is reported."""
    module = tmp_path / "pipelines" / "media" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from pipelines.score.job import run_embed\n    from . import frames\n")
    names = imported_modules(module, tmp_path)
    assert "pipelines.score.job" in names and "pipelines.media.frames" in names
    assert pipelines_target("pipelines.score.job") not in declared_imports("media") | {"media"}
