"""Imports flow one way: data, models, quant, attacks -> train -> pipeline -> report -> cli."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "robquant"
FORBIDDEN = {
    "data": {"models", "quant", "attacks", "train", "pipeline", "report", "cli"},
    "models": {"data", "quant", "attacks", "train", "pipeline", "report", "cli"},
    "quant": {"data", "train", "pipeline", "report", "cli"},
    "attacks": {"train", "pipeline", "report", "cli"},
    "train": {"pipeline", "report", "cli"},
    "pipeline": {"report", "cli"},
    "report": {"cli"},
}


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robquant."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("robquant."):
                    yield alias.name.split(".")[1]


@pytest.mark.parametrize("package", sorted(p for p in FORBIDDEN if (SRC / p).exists()))
def test_low_packages_never_import_high_ones(package):
    for path in (SRC / package).rglob("*.py"):
        bad = set(_imports(path)) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(SRC)} imports robquant.{bad}"
