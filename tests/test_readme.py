"""README's Python API example runs as written (in a temporary folder)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_api_example_runs(tmp_path, monkeypatch):
    section = README.read_text().split("## Python API", 1)[1]
    (block,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md (Python API)", "exec"), namespace)
    assert (tmp_path / "runs/api/fp/model.safetensors").is_file()
    assert set(namespace["report"].robust_accuracy) == {("pgd", 8 / 255), ("pgd", 32 / 255), ("fgsm", 8 / 255),
                                                        ("fgsm", 32 / 255)}
