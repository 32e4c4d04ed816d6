"""Deployment: export a quantized model as an ONNX QDQ model, and measure robustness on its runtimes
(ONNX Runtime, OpenVINO).

Example:
    >>> info = export_onnx(qmodel, "model.onnx", input_shape=(3, 32, 32))
    >>> result = deployed_evaluation(RuntimeModel("model.onnx"), qmodel, test_set, eps=8 / 255)

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'robquant[onnx]'``), ``openvino``
another (``robquant[openvino]``): ``load_runtime("openvino", "model.onnx")``.
"""

from robquant.deploy.export import (OPSET, OPSETS, Branch, ExportError, ExportInfo, branches, export_graph,
                                    export_onnx)
from robquant.deploy.runtime import (RUNTIMES, OpenVINOModel, RuntimeModel, deployed_evaluation, load_runtime,
                                     mismatch_check, needs_onnxruntime, needs_openvino, runtime_version)

__all__ = ["OPSET", "OPSETS", "RUNTIMES", "Branch", "ExportError", "ExportInfo", "OpenVINOModel", "RuntimeModel",
           "branches", "deployed_evaluation", "export_graph", "export_onnx", "load_runtime", "mismatch_check",
           "needs_onnxruntime", "needs_openvino", "runtime_version"]
