#!/usr/bin/env bash
# Unpack the shared JPEG copy of CIFAR-10 under .data/ (git-ignored) and convert it to the
# standard Python batches. Its checksums are not the official ones: robquant needs
# --allow-unverified-data (allow_unverified=True) to use it, and records that it did.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${SHARED_DATA:-../shared/data}"
if [ -d .data/cifar-10-batches-py ]; then echo ".data/cifar-10-batches-py exists"; exit 0; fi
if [ ! -f "$shared/cifar10-jpeg.tar.gz" ]; then echo "no $shared/cifar10-jpeg.tar.gz: nothing to prepare"; exit 0; fi
mkdir -p .data
tar xzf "$shared/cifar10-jpeg.tar.gz" -C .data
py="${PYTHON:-.venv/bin/python}"  # the converter needs Pillow, which robquant's venv has
[ -x "$py" ] || py=python3
"$py" "$shared/cifar10_jpeg_to_batches.py" .data/cifar10-jpeg .data/cifar-10-batches-py
