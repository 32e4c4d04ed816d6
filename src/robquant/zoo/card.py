"""A zoo model's card (RobustBench-style: clean, PGD-20 and AutoAttack accuracy, how it was trained,
the command that reproduces it) and its training curve, made from its records alone."""

from __future__ import annotations

import os
import statistics
from typing import Any


def evaluation_summary(evaluation: dict[str, Any], eps_255: float = 8.0) -> dict[str, Any]:
    """``{clean, clean_n, pgd20, pgd20_n, autoattack, autoattack_n}`` from an evaluate stage's record
    (accuracies in [0, 1]; an attack it did not run is left out)."""
    result = evaluation["result"]
    out: dict[str, Any] = {"clean": result["clean_accuracy"], "clean_n": result["n"], "eps_255": eps_255}
    for entry in result["robust"]:
        if abs(entry["eps_255"] - eps_255) > 1e-9:
            continue
        params = (result.get("attack_params") or {}).get(entry["attack"], {})
        if entry["attack"] == "pgd" or (params.get("name") == "pgd"):
            out.update(pgd20=entry["accuracy"], pgd20_n=entry["n"])
        elif entry["attack"] == "autoattack" or params.get("name") == "autoattack":
            out.update(autoattack=entry["accuracy"], autoattack_n=entry["n"])
    return out


def _cpu(env: dict[str, Any]) -> str:
    cpu = env.get("cpu") or {}
    if not cpu:
        return str(env.get("device", "?"))
    return (f"{cpu.get('model')} ({cpu.get('threads')} threads, kernels {cpu.get('capability')}, "
            f"bf16 units: {'yes' if cpu.get('bf16') else 'no'})")


def _n(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def render_card(name: str, record: dict[str, Any], info: dict[str, Any]) -> str:
    """The card of zoo model ``name`` (Markdown) from its model record and its index summary ``info``."""
    m = info.get("metrics", {})
    train = record.get("train") or {}
    config = record.get("config") or {}
    env = record.get("env") or {}
    data = record.get("data") or {}
    paper = info.get("paper") or {}
    size = record.get("size") or {}
    lines = [f"# {name}", "", info.get("description", ""), "",
             f"| {info.get('dataset', '')} test set | clean | PGD-20, {m.get('eps_255', 8):g}/255 | "
             f"AutoAttack (standard), {m.get('eps_255', 8):g}/255 |", "|---|---|---|---|",
             f"| this model | {_pct(m.get('clean'))} ({_n(m.get('clean_n'))} images) | {_pct(m.get('pgd20'))} "
             f"({_n(m.get('pgd20_n'))}) | {_pct(m.get('autoattack'))} ({_n(m.get('autoattack_n'))}) |"]
    if paper:
        lines.append(f"| the paper's (Li et al. 2024) | {_pct(paper.get('clean'))} | {_pct(paper.get('pgd20'))} | - |")
    history = train.get("history") or []
    seconds = sum(h.get("seconds", 0.0) for h in history)
    # a run paused between epochs (kill -STOP while tests ran) counts the pause in that epoch's seconds:
    # the speed is taken from the median epoch, which a few paused epochs do not move
    epoch_s = statistics.median(h.get("seconds", 0.0) for h in history) if history else 0.0
    per_epoch = train.get("images", 0) / max(len(history), 1)
    lines += ["", "## Training", "",
              f"- Model: {(record.get('model') or {}).get('name')}, {size.get('fp32_bytes', 0) / 1e6:.2f} MB "
              f"at 32 bits.",
              f"- Recipe: objective {config.get('objective')}; {config.get('train')}.",
              f"- Held-out check: {config.get('check')}." if config.get("check") else "",
              f"- Epochs: {train.get('epochs_completed')} (best epoch kept: {train.get('best_epoch')}); "
              f"{train.get('stop_reason') or 'ran its whole schedule'}." if train.get("best_epoch") else
              f"- Epochs: {train.get('epochs_completed')}.",
              f"- Wall time: {seconds / 60:.1f} min of training (the epochs' sum, any pause included); median "
              f"epoch {epoch_s:.1f} s, {per_epoch / max(epoch_s, 1e-9):.0f} training images/s, on {_cpu(env)}.",
              f"- Data: {_n(data.get('n_train'))} training images, sha256 "
              f"{(data.get('train') or {}).get('sha256', '?')}; verified: {data.get('verified')}.",
              f"- Code: robquant {env.get('robquant', '?')} (commit {env.get('git_commit', '?')}), torch "
              f"{env.get('torch', '?')}.",
              "", "![training curve](curve.png)", "",
              "## Reproduce", "", *[f"    {c}" for c in info.get("command", [])], ""]
    if info.get("data_note"):
        lines += ["## Data", "", info["data_note"], ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def plot_curve(record: dict[str, Any], path: str | os.PathLike, title: str = "") -> None:
    """Per-epoch training loss and accuracy (and the held-out check's accuracies, when it ran) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = record["train"]["history"]
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, [h["loss"] for h in history], color="C0")
    ax_loss.set(xlabel="epoch", ylabel="training loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], label="training (on its own inputs)")
    if any("held_out_pgd" in h for h in history):
        ax_acc.plot(epochs, [100 * h.get("held_out_clean", float("nan")) for h in history], label="held-out clean")
        ax_acc.plot(epochs, [100 * h.get("held_out_pgd", float("nan")) for h in history], label="held-out PGD-10")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    ax_acc.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
