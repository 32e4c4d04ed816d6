"""Deployment: export a quantized model as an ONNX QDQ model, and measure robustness on ONNX Runtime.

Example:
    >>> info = export_onnx(qmodel, "model.onnx", input_shape=(3, 32, 32))
    >>> result = deployed_evaluation(RuntimeModel("model.onnx"), qmodel, test_set, eps=8 / 255)

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'robquant[onnx]'``).
"""

from robquant.deploy.export import (OPSET, OPSETS, Branch, ExportError, ExportInfo, branches, export_graph,
                                    export_onnx)
from robquant.deploy.runtime import (RUNTIMES, RuntimeModel, deployed_evaluation, mismatch_check,
                                     needs_onnxruntime, runtime_version)

__all__ = ["OPSET", "OPSETS", "RUNTIMES", "Branch", "ExportError", "ExportInfo", "RuntimeModel", "branches",
           "deployed_evaluation", "export_graph", "export_onnx", "mismatch_check", "needs_onnxruntime",
           "runtime_version"]
