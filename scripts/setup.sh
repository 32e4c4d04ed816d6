#!/usr/bin/env bash
# Create .venv and install robquant with its test tools. torch==2.13.0 is the CPU build; on a
# GPU machine install your CUDA build of torch into .venv first and drop that line.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test,ray,onnx,openvino]"
# torchattacks is the test oracle for our PGD; its declared dependencies are stale, it needs only
# torch, numpy and scipy.
.venv/bin/pip install -q --no-deps torchattacks==3.5.1
echo "robquant installed in .venv"
