#!/usr/bin/env bash
# The GPU check of the performance issue: builds with the `cuda` feature, then measures zero-shot
# forward images/s, forward+backward time and one full CLIPTTA batch on ViT-B/16-shaped random
# weights, with the GPU's peak memory sampled by nvidia-smi. Meant to fit in a few minutes on one
# GPU machine (the build dominates); results go to $OUT (or target/gpu-check) and BENCHMARKS.md.
#
#   scripts/gpu_check.sh            # batches 32 and 64 on cuda:0
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
command -v nvcc >/dev/null || { echo "nvcc not found: the cuda feature needs the CUDA toolkit" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.csv"
time cargo build --features cuda --example bench_model 2>&1 | tail -3
bin=target/debug/examples/bench_model
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/memory.csv" &
smi=$!
trap 'kill $smi 2>/dev/null || true' EXIT
for batch in 32 64; do
    "$bin" --device cuda:0 --shape vit-b-16 --keep target/bench-models/vit-b-16 --batch "$batch" --reps 3 --json \
        | tee -a "$out/bench.txt"
done
kill $smi
echo "peak GPU memory used (MiB, whole device): $(sort -n "$out/memory.csv" | tail -1)" | tee -a "$out/bench.txt"
