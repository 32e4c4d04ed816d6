#!/usr/bin/env bash
# GPU checks in one short run (installs nothing; torchattacks may come as a carried wheel in .whl):
# a CLI smoke test on CUDA, then the benchmarks, each printing one JSON line.
#   bash benchmarks/gpu.sh            (on a machine with a CUDA build of torch)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! python3 -c "import torchattacks" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
smoke=$(mktemp -d)
echo "== smoke: train (pgd_at) and attack on cuda"
python3 -m robquant.cli train --dataset digits --objective pgd_at --epochs 3 --width 8 --lr 0.05 \
  --schedule cosine --out "$smoke/m" --device cuda
python3 -m robquant.cli attack "$smoke/m" --eps 8,32 --attack pgd,fgsm --device cuda
python3 -m robquant.cli quantize "$smoke/m" --method qat --precision A4W4 --epochs 2 --out "$smoke/q" --device cuda
python3 -m robquant.cli quantize "$smoke/m" --method ptq --precision A4W4 --out "$smoke/p" --device cuda
python3 -m robquant.cli attack "$smoke/p" --eps 8,32 --device cuda
echo "== benchmarks"
python3 benchmarks/bench_attack.py --device cuda --batch 128 --repeats 5
python3 benchmarks/bench_attack.py --device cuda --batch 1024 --repeats 5
python3 benchmarks/bench_train.py --device cuda --n 16384 --repeats 3
python3 benchmarks/bench_quant.py --device cuda --n 16384 --repeats 3
if [ ! -d .data/cifar-10-batches-py ] && [ -f .gpu/cifar10-jpeg.tar.gz ]; then
  mkdir -p .data && tar xzf .gpu/cifar10-jpeg.tar.gz -C .data \
    && python3 .gpu/cifar10_jpeg_to_batches.py .data/cifar10-jpeg .data/cifar-10-batches-py
fi
python3 benchmarks/bench_cifar_short.py --device cuda --epochs ${CIFAR_EPOCHS:-15} --fraction 1.0
