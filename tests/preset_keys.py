"""The stage keys of every preset (``src/robquant/configs/**/*.yaml``), kept in ``tests/data/preset_keys.json``.

A stage key names a stored result: a change to one makes every user's stored stages of that preset
stale (they would be computed again). ``tests/test_presets.py`` checks the keys against the kept ones;
after a change that is meant to re-key (a new default, a preset's new recipe), write them again:

    python tests/preset_keys.py
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "robquant" / "configs"
KEPT = Path(__file__).resolve().parent / "data" / "preset_keys.json"


def preset_keys() -> dict[str, list[str]]:
    """``{preset path under configs/: its stage keys (the first 16 hex digits), sorted}``, planned
    without any data."""
    from robquant.pipeline.plan import build_plan
    from robquant.pipeline.study import load_study

    return {str(p.relative_to(CONFIGS)): sorted(k[:16] for k in build_plan(load_study(p), lambda: 1000).stages)
            for p in sorted(CONFIGS.rglob("*.yaml"))}


if __name__ == "__main__":
    KEPT.parent.mkdir(parents=True, exist_ok=True)
    KEPT.write_text(json.dumps(preset_keys(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {KEPT}")
