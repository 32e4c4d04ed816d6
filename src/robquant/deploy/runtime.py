"""Robustness measured on the deployed model: an exported ONNX model run by ONNX Runtime or OpenVINO, or the
same integer model as an ExecuTorch program (:mod:`robquant.deploy.executorch`).

The runtime gives no gradients, so the deployed model is attacked two ways:

- **transfer** from the fake-quantized PyTorch model it was exported from: PGD examples crafted
  on that model (the evaluation's own white-box attack) are fed to the runtime;
- **Square** (gradient-free, through ``pyautoattack``) queries the runtime itself.

Beside them, top-1 agreement of the runtime with the fake-quantized model on clean and on the
transferred adversarial inputs says whether the two are the same classifier: fake quantization
and the integer model can disagree (rounding of ties, accumulation order, a runtime's own kernels).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robquant.evaluation.trust import TrustCheck, register_check
from robquant.data import to_unit
from robquant.defaults import ATTACK_STEPS, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES, CHECK_TOL, RESTARTS
from robquant.errors import CheckpointError, ConfigError
from robquant.progress import NULL_PROGRESS, Progress
from robquant.quant.ste import exact_float32

SQUARE_CHUNK = 50  # Square runs on this many examples at a time, so that its progress shows


def needs_onnxruntime() -> Any:
    """The ``onnxruntime`` package, or a ConfigError naming the install command."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("evaluating an ONNX model needs onnxruntime: pip install 'robquant[onnx]' "
                          "(onnx and onnxruntime)") from None
    return onnxruntime


def needs_openvino() -> Any:
    """The ``openvino`` package, or a ConfigError naming the install command."""
    try:
        import openvino
    except ImportError:
        raise ConfigError("running an ONNX model on OpenVINO needs openvino: pip install 'robquant[openvino]'") from None
    return openvino


def runtime_version(name: str = "onnxruntime") -> str:
    """The runtime's name and version, as records keep it."""
    from importlib.metadata import version

    package = RUNTIME_MODELS[name].package()
    return f"{name} {getattr(package, '__version__', None) or version(package.__name__)}"


def file_metadata(path: str | Path) -> dict[str, str]:
    """The ONNX file's metadata properties (where it came from: ``robquant.source`` and the rest), read
    without running it (the ``onnx`` package; empty where it is not installed)."""
    try:
        import onnx
    except ImportError:
        return {}
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


class _Runtime(nn.Module):
    """An ONNX model run by a runtime on the CPU, as a module: [0, 1] images in, logits out, as torch
    tensors on the input's device. No parameters and no gradients (forward passes only).

    Attributes:
        name: The runtime (:data:`RUNTIMES`).
        fusion: Whether the runtime's own rewriting of the quantized graph is on, as it ships.
        settings: What the runtime ran the model with, for the record.
    """

    name: str = ""

    def __init__(self, path: str | Path, threads: int | None = None, fusion: bool = True,
                 model: nn.Module | None = None) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such ONNX model")
        self.path, self.threads, self.fusion = path, threads, fusion
        self.settings: dict[str, Any] = {}

    @classmethod
    def package(cls) -> Any:
        raise NotImplementedError

    @property
    def version(self) -> str:
        return runtime_version(self.name)

    def unfused(self) -> "_Runtime":
        """The same file on the same runtime with its own rewriting off: the graph as written."""
        return type(self)(self.path, self.threads, fusion=False)

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.run(np.ascontiguousarray(x.detach().cpu().float().numpy()))
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


class RuntimeModel(_Runtime):
    """An ONNX model run by ONNX Runtime (CPU).

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (default: the runtime's, every core).
        fusion: The runtime's QDQ fusion, on by default as it ships: it runs quantized patterns with
            integer kernels and, in doing so, quantizes to int8 the float weights of layers whose
            input is quantized (an activation-only model, AxW32, runs with int8 weights). Off
            (``session.disable_quant_qdq``): the graph runs as written.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, fusion: bool = True,
                 model: nn.Module | None = None) -> None:
        super().__init__(path, threads, fusion)
        ort = needs_onnxruntime()
        options = ort.SessionOptions()
        # the runtime's threads would otherwise spin after each run, taking the cores from the
        # PyTorch work (attacks on the fake-quantized model) that alternates with it
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if not fusion:
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # the runtime's own errors name the problem
            raise CheckpointError(f"ONNX Runtime cannot load {self.path}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.settings = {"qdq_fusion": fusion}

    @classmethod
    def package(cls) -> Any:
        return needs_onnxruntime()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class OpenVINOModel(_Runtime):
    """An ONNX model compiled by OpenVINO for its CPU plugin, from the same QDQ file ONNX Runtime reads.

    OpenVINO reads each QuantizeLinear/DequantizeLinear pair as a FakeQuantize and its low-precision
    transformations run the quantized layers with integer kernels; the weights and scales are the
    file's, not a re-quantization.

    Args:
        path: The ``.onnx`` file.
        threads: Inference threads (default: the runtime's, every core).
        fusion: As it ships (on): the plugin's default inference precision, which is bf16 for the float
            parts on a CPU with bf16 units; off: float32 (``INFERENCE_PRECISION_HINT``), the graph's own.
    """

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, fusion: bool = True,
                 model: nn.Module | None = None) -> None:
        super().__init__(path, threads, fusion)
        ov = needs_openvino()
        config: dict[str, Any] = {}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        if not fusion:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except Exception as exc:  # the runtime's own errors name the problem
            raise CheckpointError(f"OpenVINO cannot load {self.path}: {exc}") from None
        self.request = self.compiled.create_infer_request()
        self.metadata = file_metadata(self.path)
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.settings = {"inference_precision": getattr(precision, "to_string", lambda: str(precision))(),
                         "cpu_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}

    @classmethod
    def package(cls) -> Any:
        return needs_openvino()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer([x])[0].copy()


class ExecuTorchModel(_Runtime):
    """The integer model of an ONNX export as an ExecuTorch program (:mod:`robquant.deploy.executorch`): built from
    ``model``, the fake-quantized model the file was exported from (the same export graph, so the same integers
    and scales), written beside the file (``model.pte``; ``model.portable.pte`` without XNNPACK) the first time it
    runs, and run by ExecuTorch's runtime.

    Args:
        path: The ``.onnx`` file (its metadata; the program goes beside it).
        threads: Not used (XNNPACK's thread pool takes the cores).
        fusion: XNNPACK's delegate, on as it ships; off: ExecuTorch's portable and quantized kernels only.
        model: The fake-quantized model (needed to run; without it the runtime only reads the file's metadata).
    """

    name = "executorch"

    def __init__(self, path: str | Path, threads: int | None = None, fusion: bool = True,
                 model: nn.Module | None = None) -> None:
        super().__init__(path, threads, fusion)
        self.package()  # installed, or the install command
        self.model, self.runner = model, None
        self.program = self.path.with_name(self.path.stem + (".pte" if fusion else ".portable.pte"))
        self.metadata = file_metadata(self.path)
        self.settings = {"xnnpack": fusion}

    @classmethod
    def package(cls) -> Any:
        from robquant.deploy.executorch import needs_executorch

        return needs_executorch()

    def unfused(self) -> "ExecuTorchModel":
        return ExecuTorchModel(self.path, self.threads, fusion=False, model=self.model)

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.runner is None:
            from robquant.deploy.executorch import ProgramRunner, write_program

            if self.model is None:
                raise ConfigError("ExecuTorch runs a program built from the fake-quantized model the file was exported "
                                  "from: load_runtime('executorch', path, model=...)")
            self.settings.update(write_program(self.model, self.program, tuple(x.shape[1:]), xnnpack=self.fusion))
            self.runner = ProgramRunner(self.program)
        return self.runner(x)


RUNTIME_MODELS: dict[str, type[_Runtime]] = {"onnxruntime": RuntimeModel, "openvino": OpenVINOModel,
                                             "executorch": ExecuTorchModel}
RUNTIMES = tuple(RUNTIME_MODELS)


def load_runtime(name: str, path: str | Path, threads: int | None = None, fusion: bool = True,
                 model: nn.Module | None = None) -> _Runtime:
    """The ONNX file ``path`` on the runtime ``name`` (:data:`RUNTIMES`), ready to run; ExecuTorch runs the same
    integer model built from ``model``, the fake-quantized model the file was exported from (the others read the file).

    Raises:
        ConfigError: an unknown runtime, or its package is not installed.
        CheckpointError: no such file, or the runtime cannot load it.
    """
    if name not in RUNTIME_MODELS:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {name!r}")
    return RUNTIME_MODELS[name](path, threads, fusion, model)


def exceeds(value: float, threshold: float) -> bool:
    """``value > threshold`` beyond float noise: one example in 100 is the 1-point threshold, and
    accuracies in float32 make 0.25 - 0.24 come out as 0.010000005."""
    return bool(value > threshold + 1e-6)


def batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """``model``'s logits on ``x`` in batches on ``device``, gathered on the CPU."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(x[i:i + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@exact_float32()  # the fake-quantized model as a deployment computes it (no TF32)
def deployed_evaluation(runtime: nn.Module, reference: nn.Module, dataset: Any, eps: float, *,
                        n: int = CHECK_EXAMPLES, steps: int = ATTACK_STEPS, restarts: int = RESTARTS,
                        square_queries: int = CHECK_SQUARE_QUERIES, seed: int = 0,
                        batch_size: int = 256, device: torch.device | str = "cpu",
                        threshold: float = CHECK_TOL, label: float | None = None,
                        progress: Progress = NULL_PROGRESS, shared: dict[Any, Any] | None = None) -> dict[str, Any]:
    """Clean and robust accuracy of the deployed model, and its agreement with the fake-quantized one.

    Args:
        runtime: The deployed model (:func:`load_runtime`: ONNX Runtime, OpenVINO or ExecuTorch).
        reference: The fake-quantized PyTorch model it was exported from.
        dataset: Test set; its first ``n`` examples are used.
        eps: Budget in [0, 1] units.
        label: The budget as the study or command wrote it (/255; default ``eps`` x 255).
        steps, restarts: The PGD crafted on ``reference`` (transfer).
        square_queries: Square's queries per example on the runtime.
        threshold: A mismatch (``mismatch``: top-1 disagreement, clean or adversarial, or the
            difference of Square accuracy on the two models with the same seed) above this
            fraction is flagged (``flag``).
        progress: Shows the examples attacked so far: PGD on the reference, then Square on each
            model in chunks of :data:`SQUARE_CHUNK` examples.
        shared: Where the work on ``reference`` is kept for the next runtime evaluated against it with the
            same data and options (the same file on several runtimes): its clean logits, the transferred PGD
            examples and its Square outcome (per set of examples attacked), which are the same for every
            runtime. An empty dict to start; None: nothing kept.

    Returns:
        ``clean_accuracy`` (runtime), ``reference_clean_accuracy``, ``clean_agreement``,
        ``adversarial_agreement`` (on the transferred PGD examples), ``accuracy`` (runtime under
        ``transfer`` and ``square``; fake-quant under ``reference_pgd`` and ``reference_square``),
        ``robustness`` (runtime, robust under both), ``max_logit_diff`` (clean), ``mismatch``,
        ``flag``, ``seconds``; ``unfused``: when the runtime (with QDQ fusion) disagrees, the
        agreement of the same file with fusion off, which says whether the fusion is the cause.
    """
    from robquant.attacks import create_attack

    t0 = time.perf_counter()
    label = round(eps * 255, 6) if label is None else label
    device = torch.device(device)
    data = dataset.head(n)
    n = len(data)
    if n == 0:
        raise ConfigError("deployed evaluation needs at least one test example")
    x, y = to_unit(data.images), data.labels
    logits = functools.partial(batched_logits, batch_size=batch_size, device=device)
    kept = {} if shared is None else shared.setdefault((id(reference), dataset.sha256, n, eps, steps, restarts,
                                                        square_queries, seed), {})
    ref_clean = _once(kept, "clean", lambda: logits(reference.eval(), x))
    run_clean = logits(runtime, x)
    correct = run_clean.argmax(1) == y
    idx = torch.nonzero(correct).flatten()
    square = functools.partial(_square_survivors, x=x, y=y, idx=idx, eps=eps, queries=square_queries, seed=seed,
                               logits=logits, chunk=min(batch_size, SQUARE_CHUNK), device=device)
    with progress.task(f"deployed model at {label:g}/255: PGD-{steps} on the reference, Square "
                       f"({square_queries} queries) on both", n + 2 * len(idx)) as task:
        def transferred() -> tuple[torch.Tensor, torch.Tensor]:
            generator = torch.Generator(device=device).manual_seed(seed)
            pgd = create_attack("pgd", reference, eps, steps=steps, restarts=restarts, generator=generator)
            x_adv = _transferred(pgd, x, y, batch_size, device, task)
            return x_adv, logits(reference, x_adv)

        x_adv, ref_adv = _once(kept, "transferred", transferred, task, n)
        run_adv = logits(runtime, x_adv)
        transfer_ok = correct & (run_adv.argmax(1) == y)
        # Square with the same seed on both models, on the examples the runtime classifies correctly:
        # the same classifier gives the same queries and the same result
        square_ok = square(runtime, ok=correct.clone(), task=task)
        square_ref_ok = _once(kept, ("square", tuple(idx.tolist())),
                              lambda: square(reference, ok=ref_clean.argmax(1) == y, task=task), task, len(idx))
    clean_agree = (ref_clean.argmax(1) == run_clean.argmax(1)).double().mean().item()
    adv_agree = (ref_adv.argmax(1) == run_adv.argmax(1)).double().mean().item()
    unfused = None  # where they disagree: is it the runtime's own rewriting (ONNX Runtime's QDQ fusion)?
    if getattr(runtime, "fusion", False) and min(clean_agree, adv_agree) < 1 - threshold:
        plain = runtime.unfused()
        unfused = {"clean_agreement": (logits(plain, x).argmax(1) == ref_clean.argmax(1)).double().mean().item(),
                   "adversarial_agreement": (logits(plain, x_adv).argmax(1) == ref_adv.argmax(1)).double().mean().item()}
    square_gap = abs(square_ok.double().mean().item() - square_ref_ok.double().mean().item())
    return {
        "runtime": runtime.version if isinstance(runtime, _Runtime) else runtime_version(),
        "fusion": getattr(runtime, "fusion", None), "settings": getattr(runtime, "settings", {}), "unfused": unfused,
        "n": n, "eps": eps, "eps_255": label,
        "clean_accuracy": correct.double().mean().item(),
        "reference_clean_accuracy": (ref_clean.argmax(1) == y).double().mean().item(),
        "clean_agreement": clean_agree, "adversarial_agreement": adv_agree,
        "accuracy": {"transfer": transfer_ok.double().mean().item(), "square": square_ok.double().mean().item(),
                     "reference_pgd": (ref_adv.argmax(1) == y).double().mean().item(),
                     "reference_square": square_ref_ok.double().mean().item()},
        "robustness": (transfer_ok & square_ok).double().mean().item(),
        "robust_mask": (transfer_ok & square_ok).tolist(),
        "max_logit_diff": float((ref_clean - run_clean).abs().max()),
        "attacks": {"transfer": {"steps": steps, "restarts": restarts, "crafted_on": "fake-quantized model"},
                    "square": {"n_queries": square_queries}},
        "mismatch": max(1 - clean_agree, 1 - adv_agree, square_gap),
        "threshold": threshold, "flag": exceeds(max(1 - clean_agree, 1 - adv_agree, square_gap), threshold),
        "seconds": time.perf_counter() - t0,
    }


def _once(kept: dict[Any, Any], key: Any, make: Any, task: Any = None, skipped: int = 0) -> Any:
    """``kept[key]``, made by ``make()`` the first time (later: ``skipped`` steps of ``task`` counted as done)."""
    if key not in kept:
        kept[key] = make()
    elif task is not None:
        task.advance(skipped)
    return kept[key]


def _transferred(pgd: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
                 task: Any) -> torch.Tensor:
    """PGD's examples, crafted batch by batch on the model ``pgd`` attacks (on the CPU)."""
    adv = []
    for i in range(0, len(x), batch_size):
        adv.append(pgd(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu())
        task.advance(len(adv[-1]))
    return torch.cat(adv)


def _square_survivors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, ok: torch.Tensor,
                      eps: float, queries: int, seed: int, logits: Any, chunk: int, device: torch.device,
                      task: Any) -> torch.Tensor:
    """``ok`` (updated) with Square (``seed``) run on ``model`` at the examples ``idx``, in chunks (the
    progress moves with each): an example stays ok only if Square's example is still classified right."""
    from robquant.attacks import create_attack

    square = create_attack("square", model, eps, n_queries=queries, seed=seed, fold_bn=False)
    for i in range(0, len(idx), chunk):
        part = idx[i:i + chunk]
        x_sq = square(x[part].to(device), y[part].to(device)).cpu()
        ok[part] &= logits(model, x_sq).argmax(1) == y[part]
        task.advance(len(part))
    return ok


# the trust check this package supplies: "not run" in every evaluation's checks until a deployed evaluation judges it
register_check(TrustCheck("deployed_mismatch", "top-1 disagreement with the deployed model (not evaluated)",
                          lambda tol: CHECK_TOL))


def mismatch_check(deployed: dict[str, Any], record_accuracy: float | None = None) -> dict[str, Any]:
    """The trust check ``deployed_mismatch``: is the deployed model the model the record measured?
    Its value is the largest of the top-1 disagreement with the fake-quantized model on clean
    inputs, on the transferred PGD inputs, and the difference in Square accuracy (the same seed
    on both); flagged above the threshold (1 point). The deployed model's robustness beside the
    robustness of record (``record_accuracy``, same examples) is reported as ``robustness_gap``:
    the deployed model meets weaker attacks (no gradients), so the gap is not part of the flag.

    Args:
        deployed: A :func:`deployed_evaluation` result.
        record_accuracy: The evaluation's robustness of record on the same examples (None: unknown).
    """
    gap = None if record_accuracy is None else record_accuracy - deployed["robustness"]
    return {"flag": bool(deployed["flag"]), "value": deployed["mismatch"], "threshold": deployed["threshold"],
            "robustness_gap": gap, "unfused": deployed.get("unfused"),
            "detail": "deployed vs fake-quantized model: worst of clean and adversarial top-1 disagreement "
                      "and Square accuracy difference"}
