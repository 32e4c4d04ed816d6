"""README's examples run as written (in a temporary folder): the Python API block and the tour's commands."""

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from robquant.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _section(title: str) -> str:
    return README.read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _commands(text: str) -> list[list[str]]:
    """The ``robquant ...`` lines of the indented (code) blocks, continuation lines joined, comments dropped."""
    lines = [line[4:] for line in text.splitlines() if line.startswith("    ")]
    joined = re.sub(r"\\\n\s*", "", "\n".join(lines))
    return [shlex.split(line, comments=True)[1:] for line in joined.splitlines() if line.startswith("robquant ")]


def test_the_readme_api_example_runs(tmp_path, monkeypatch):
    (block,) = re.findall(r"```python\n(.*?)```", _section("Python API"), flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md (Python API)", "exec"), namespace)
    assert (tmp_path / "runs/api/fp/model.safetensors").is_file()
    assert set(namespace["report"].robust_accuracy) == {("pgd", 8 / 255), ("pgd", 32 / 255), ("fgsm", 8 / 255),
                                                        ("fgsm", 32 / 255)}


def test_the_readme_tour_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    commands = _commands(_section("Tour"))
    assert [c[0] for c in commands] == ["run", "status", "train", "quantize", "attack", "export", "attack"]
    for args in commands:
        result = CliRunner().invoke(app, ["--quiet", *args])
        assert result.exit_code == 0, f"robquant {' '.join(args)}:\n{result.output}"
    assert (tmp_path / "runs/tour/robust/model.safetensors").is_file()
    assert (tmp_path / "runs/tour/ptq-a4w4-attack/outcomes.npz").is_file()
    assert (tmp_path / "runs/tour/ptq-a4w4.onnx").resolve().parent.parent.name == "stages"  # the export stage's
    assert (tmp_path / "runs/tour/ptq-a4w4-deployed/stage.json").is_file()
    # every page the README links to exists
    for link in re.findall(r"\]\((docs/[^)#]+)", README.read_text()):
        assert (ROOT / link).is_file(), link
