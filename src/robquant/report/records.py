"""A study's results as flat rows, read from the store alone (no model is loaded, nothing is run)."""

from __future__ import annotations

from typing import Any

from robquant.quant.precision import parse_precision


def pipeline_label(method: str, strategy: str | None, init: str) -> str:
    """``PTQ from robust``, ``QAT/adversarial from random``, ..."""
    return f"{method.upper()}{'/' + strategy if strategy else ''} from {init}"


def collect(plan: Any, store: Any) -> list[dict[str, Any]]:
    """One row per (cell, seed) whose evaluation is finished.

    Row fields: init, method, strategy, pipeline, precision, act_bits, weight_bits, bits (the common
    bit-width when activations and weights share it, else None), fraction, seed, status
    (``done``/``NC``), clean (accuracy), robustness (worst case over attacks at the main eps, on
    the examples every attack covered: ``robustness_n``), reference (the paper's attack, the
    first PGD, alone at the main eps on all its examples; None without one), reference_attack,
    reference_n, gap (the paper's attack minus the worst case, on the same examples), worst
    ``{eps_255: acc}``, worst_n ``{eps_255: n}``, worst_attacks ``{eps_255: [labels]}``, robust
    ``{(attack, eps_255): acc}`` and robust_n ``{(attack, eps_255): n}`` (each attack on its own
    examples; cumulative when the evaluation cascaded), cascade, flags, wall_s and passes (of the
    quantization stage), bytes (model size), key, deployed (the deployed model's numbers on its
    runtime, None unless the study asked for them) and onnx (the exported file, or None).
    """
    rows = []
    for cell, seed, key in plan.cells:
        row = store.get(key)
        if row is None or row["status"] not in ("done", "NC"):
            continue
        m = row["metrics"] or {}
        quant = store.get(row["parents"][0]) if row["parents"] else None
        q = (quant or {}).get("record") or {}  # the index holds each stage's full record
        p = parse_precision(cell.precision)
        train = q.get("train") or {}
        planned = (q.get("stage") or {}).get("planned_cost") or {}
        passes = train.get("passes_total")
        if passes is None:  # PTQ: calibration forwards only
            passes = planned.get("forward", 0) + planned.get("backward", 0)
        ref = m.get("reference") or {}
        common = ref.get("accuracy_common")
        rows.append({
            "init": cell.init, "method": cell.method, "strategy": cell.strategy,
            "pipeline": pipeline_label(cell.method, cell.strategy, cell.init),
            "precision": cell.precision, "act_bits": p.act_bits, "weight_bits": p.weight_bits,
            "bits": p.act_bits if p.act_bits == p.weight_bits else None,
            "fraction": cell.fraction, "seed": seed, "status": row["status"],
            "clean": m.get("clean_accuracy"), "robustness": m.get("robustness"),
            "robustness_n": m.get("robustness_n"),
            "reference": ref.get("accuracy"), "reference_n": ref.get("n"),
            "reference_attack": m.get("reference_attack"),
            "gap": None if common is None or m.get("robustness") is None else common - m["robustness"],
            "worst": {r["eps_255"]: r["accuracy"] for r in m.get("worst_case", [])},
            "worst_n": {r["eps_255"]: r.get("n") for r in m.get("worst_case", [])},
            "worst_attacks": {r["eps_255"]: r.get("attacks") for r in m.get("worst_case", [])},
            "robust": {(r["attack"], r["eps_255"]): r["accuracy"] for r in m.get("robust", [])},
            "robust_n": {(r["attack"], r["eps_255"]): r.get("n") for r in m.get("robust", [])},
            "cascade": bool((row.get("record") or {}).get("result", {}).get("cascade")),
            "flags": list(m.get("flags") or []),
            "wall_s": (q.get("stage") or {}).get("wall_s"), "passes": passes,
            "bytes": (q.get("size") or {}).get("bytes"), "key": key,
            "deployed": m.get("deployed"), "onnx": _onnx(store, key),
        })
    return rows


def _onnx(store: Any, key: str) -> str | None:
    """The ONNX file an evaluation exported (a deployed evaluation), if any."""
    path = store.artifact_dir(key) / "model.onnx"
    return str(path) if path.is_file() else None
