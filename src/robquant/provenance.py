"""What produced a result: code version, library versions, device, time."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from robquant import __version__


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The git commit of the robquant source tree, with ``+dirty`` if modified; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16() -> bool:
    """Whether PyTorch's CPU kernels (oneDNN) see bfloat16 units on this CPU (AVX512-BF16 or AMX):
    where they do not, bf16 autocast emulates it and runs slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_facts() -> dict[str, object]:
    """The CPU as PyTorch uses it: model, kernel level (``ATEN_CPU_CAPABILITY``), bf16 units, threads."""
    return {"model": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(), "bf16": cpu_bf16(),
            "threads": torch.get_num_threads()}


def device_name(device: torch.device | str) -> str:
    """A human-readable device description (GPU model name on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def environment(device: torch.device | str | None = None) -> dict[str, object]:
    """Versions and machine facts recorded with every result."""
    import numpy

    env: dict[str, object] = {
        "robquant": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_facts(),
    }
    if device is not None:
        env["device"] = device_name(device)
    return env


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StageInfo:
    """How a store's stage made its record: the record's ``stage`` block, written by the executor
    (:func:`robquant.pipeline.executor.run_stage`) through :meth:`to_dict` and read back by :meth:`read`.

    Attributes:
        key, kind, label: The stage.
        parents: Its parents' keys by role (``checkpoint``, ``teacher``, ``model``, ``surrogate``, ...).
        planned_cost: The plan's (forward, backward) image passes.
        estimated_s: The plan's estimate (None: not estimated).
        wall_s: Seconds from its start to its record; ``compute_s`` of them computing (the rest overhead).
        device: Where it ran.
    """

    key: str
    kind: str
    label: str
    parents: dict[str, str]
    planned_cost: dict[str, float] | None = None
    estimated_s: float | None = None
    wall_s: float | None = None
    device: str | None = None
    compute_s: float | None = None

    @classmethod
    def read(cls, record: dict[str, Any] | None) -> "StageInfo | None":
        """From a stage's record (None when it has no ``stage`` block: a model folder made elsewhere)."""
        block = (record or {}).get("stage")
        if not block:
            return None
        return cls(**{f.name: block.get(f.name) for f in fields(cls)} | {"parents": block.get("parents") or {}})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
