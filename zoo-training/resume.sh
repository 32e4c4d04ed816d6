#!/usr/bin/env bash
# Put the zoo preset's committed training checkpoints (zoo-training/<stage key>.pt) into a store, so that
# `robquant run` continues each training from its last finished epoch instead of epoch 0. A training that
# takes longer than one working session is committed here between sessions and resumed from here.
#
#   bash zoo-training/resume.sh [STORE]      # default runs/zoo; then the command it prints
set -euo pipefail
cd "$(dirname "$0")/.."
store="${1:-runs/zoo}"
for f in zoo-training/*.pt; do
  [ -e "$f" ] || { echo "no checkpoint in zoo-training/"; exit 0; }
  key="$(basename "$f" .pt)"
  dest="$store/work/$key/checkpoints/last.pt"
  if [ -d "$store/stages/$key" ]; then echo "stage $key is finished in $store: nothing to resume"; continue; fi
  if [ -f "$dest" ]; then echo "$dest exists: kept (it may be further on)"; continue; fi
  mkdir -p "$(dirname "$dest")"
  cp "$f" "$dest"
  echo "stage $key resumes from $f"
done
echo "now: robquant run src/robquant/configs/zoo-cifar10.yaml --store $store"
