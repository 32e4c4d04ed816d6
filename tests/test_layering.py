"""Imports flow one way: the base modules (defaults, errors, keys, options, sections, plugins, registry, progress, provenance) -> data,
models, quant -> modelfolder (the saved-model format) -> zoo (shipped models by name) -> attacks (the attack library) ->
evaluation (evaluating under attacks) -> deploy -> train -> pipeline -> report -> display, cli."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "robquant"
ABOVE_BASE = {"data", "models", "quant", "modelfolder", "zoo", "attacks", "evaluation", "deploy", "train", "pipeline", "report", "display", "cli"}
FORBIDDEN = {
    "defaults": ABOVE_BASE | {"errors", "keys", "options", "plugins", "registry", "progress", "provenance", "sections"},
    "errors": ABOVE_BASE | {"keys", "options", "plugins", "registry", "progress", "provenance", "sections"},
    "keys": ABOVE_BASE | {"options", "plugins", "registry", "progress", "provenance", "sections"},
    "registry": ABOVE_BASE | {"progress", "provenance"},
    "plugins": ABOVE_BASE | {"registry", "progress", "provenance"},
    "options": ABOVE_BASE | {"plugins", "registry", "progress", "provenance", "sections"},
    "sections": ABOVE_BASE | {"plugins", "registry", "progress", "provenance"},
    "progress": ABOVE_BASE,
    "provenance": ABOVE_BASE,
    "data": {"models", "quant", "modelfolder", "zoo", "attacks", "evaluation", "deploy", "train", "pipeline", "report", "display", "cli"},
    "models": {"data", "quant", "modelfolder", "zoo", "attacks", "evaluation", "deploy", "train", "pipeline", "report", "display", "cli"},
    "quant": {"data", "modelfolder", "zoo", "evaluation", "deploy", "train", "pipeline", "report", "display", "cli"},
    "modelfolder": {"data", "zoo", "attacks", "evaluation", "deploy", "train", "pipeline", "report", "display", "cli"},
    "zoo": {"data", "attacks", "evaluation", "deploy", "train", "pipeline", "report", "display", "cli"},
    "attacks": {"evaluation", "deploy", "train", "pipeline", "report", "display", "cli"},
    "evaluation": {"deploy", "train", "pipeline", "report", "display", "cli"},
    "deploy": {"train", "pipeline", "report", "display", "cli"},
    "train": {"pipeline", "report", "display", "cli"},
    "pipeline": {"report", "display", "cli"},
    "report": {"display", "cli"},
    "display": {"cli"},
}


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robquant."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("robquant."):
                    yield alias.name.split(".")[1]


def _files(part):
    """A package's modules, or a root module."""
    return sorted((SRC / part).rglob("*.py")) if (SRC / part).is_dir() else [SRC / f"{part}.py"]


def test_every_module_has_a_layer():
    parts = {p.stem for p in SRC.glob("*.py")} | {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert parts - {"__init__"} <= set(FORBIDDEN) | {"cli"}, parts - set(FORBIDDEN)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_low_layers_never_import_high_ones(part):
    for path in _files(part):
        bad = set(_imports(path)) & FORBIDDEN[part]
        assert not bad, f"{path.relative_to(SRC)} imports robquant.{bad}"


def test_the_code_is_clean_under_pyflakes_rules():
    # ruff with the F rules (pyproject.toml): no unused imports or names, no undefined names
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).is_file():
        pytest.skip("ruff is not installed (the extra robquant[test])")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([ruff, "check", "src", "tests", "benchmarks"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# Defaults whose values are distinctive enough to find: each is written in robquant/defaults.py and
# nowhere else in the source (its users import it), so that changing it changes it everywhere.
WRITTEN_ONCE = ("SQUARE_QUERIES", "BITFLIP_RANDOM_CAP", "N_BOOT")


def _literals(path):
    """The numbers a module writes, outside docstrings and comments."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            yield node.value, node.lineno


def test_shared_defaults_are_written_once():
    import robquant.defaults as defaults

    values = {getattr(defaults, name): name for name in WRITTEN_ONCE}
    found = [f"{path.relative_to(SRC)}:{line} writes {value} ({values[value]})"
             for path in sorted(SRC.rglob("*.py")) if path.name != "defaults.py"
             for value, line in _literals(path) if value in values]
    assert not found, found


def test_pixels_become_unit_floats_in_one_place():
    # uint8 pixels -> [0, 1] floats: robquant.data.to_unit, not a division by 255 repeated in every module
    pattern = ("div(255", "div_(255", "/ 255.0")
    found = [f"{path.relative_to(SRC)}:{i}" for path in sorted(SRC.rglob("*.py"))
             for i, line in enumerate(path.read_text().splitlines(), 1) if any(p in line for p in pattern)]
    assert not found, found


def test_no_module_imports_its_own_packages_init():
    # a package's modules import each other by module (robquant.attacks.registry), never the package's
    # __init__ (which imports them all: a circle dodged by importing inside a function)
    found = []
    for package in (p for p in SRC.iterdir() if (p / "__init__.py").exists()):
        for path in package.rglob("*.py"):
            if path.name == "__init__.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == f"robquant.{package.name}":
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, found
