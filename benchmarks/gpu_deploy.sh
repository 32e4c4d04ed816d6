#!/usr/bin/env bash
# GPU check of the deployment path, in one short run (installs nothing from the network; wheels of
# missing pure-Python packages may come carried in .whl): a digits ResNet-20 trained and quantized
# on CUDA (PTQ A8W8, QAT A4W4), exported to ONNX, run on ONNX Runtime (CPU) and attacked there
# (PGD on CUDA transferred, Square on the runtime); then the deployment tests.
#   bash benchmarks/gpu_deploy.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
wheels=()
for pair in pyautoattack:pyautoattack torchattacks:torchattacks \
            "pydantic:pydantic pydantic_core annotated_types typing_inspection"; do
  module=${pair%%:*}
  if ! python3 -c "import $module" 2>/dev/null; then
    for name in ${pair#*:}; do wheels+=(.whl/"$name"-[0-9]*.whl); done
  fi
done
echo "carried wheels installed: ${wheels[*]:-none}"
if [ ${#wheels[@]} -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, onnx, onnxruntime; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(), 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__)"
d=$(mktemp -d)
rq() { python3 -m robquant.cli "$@"; }
rq train --dataset digits --epochs 8 --width 8 --lr 0.05 --schedule cosine --out "$d/fp" --device cuda | tail -2
rq quantize "$d/fp" --method ptq --precision A8W8 --out "$d/ptq" --device cuda | tail -2
rq quantize "$d/fp" --method qat --precision A4W4 --epochs 2 --lr 0.01 --out "$d/qat" --device cuda | tail -2
for m in ptq qat; do
  echo "== $m: export, then attack the ONNX model (PGD on cuda, Square on onnxruntime)"
  time python3 -m robquant.cli export "$d/$m" --out "$d/$m.onnx" --check-n 1000
  rq attack "$d/$m.onnx" --eps 8,32 --n-test 359 --square-queries 1000 --device cuda
done
if [ -z "${SKIP_TESTS:-}" ]; then
  echo "== deployment tests (CPU models, this machine's torch/onnx/onnxruntime)"
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_deploy.py 2>&1 | tail -4
fi
