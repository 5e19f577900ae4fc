#!/usr/bin/env bash
# The GPU check of the performance issue, run on a GPU machine with the binaries that
# `scripts/gpu_build.sh` made (that machine has no Rust toolchain). About three minutes:
#   0. the CUDA path against the CPU path: embeddings and LayerNorm gradients (gpu_agreement);
#   1. cliptta on ViT-B/16-shaped random weights, batches 32/64/128: zero-shot forward images/s,
#      forward+backward, one full CLIPTTA batch, with the GPU memory used (nvidia-smi, sampled);
#   2. the same forward and LayerNorm step side by side with PyTorch on the same GPU;
#   3. the demo (embedded model, demo lake, zero-shot and open-set CLIPTTA) on the GPU, whose
#      accuracy, AUROC and FPR95 should match the CPU's (BENCHMARKS.md).
# Logs go to $OUT (or target/gpu-check).
#
#   scripts/gpu_check.sh [target/gpu-bin]
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/gpu-bin}
out=${OUT:-target/gpu-check}
mkdir -p "$out"
exec > >(tee -a "$out/gpu-check.log") 2>&1

# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
if ldd "$bin/bench_model" | grep 'not found'; then echo "missing libraries (above)"; exit 2; fi

gpu_mib() { nvidia-smi --id=0 --query-gpu=memory.used --format=csv,noheader,nounits; }
# Runs a command while sampling the GPU's used memory; prints the most it used.
with_gpu_peak() {
    local before samples=$out/samples.txt
    before=$(gpu_mib)
    nvidia-smi --id=0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 >"$samples" &
    local smi=$!
    "$@"
    local rc=$?
    kill $smi
    echo "peak GPU memory used by the command: $(( $(sort -n "$samples" | tail -1) - before )) MiB"
    return $rc
}

model=/tmp/vit-b-16
echo "== 0. CUDA against CPU"
timeout 100 "$bin/gpu_agreement" --model data/models/default --batch 16
# Writes the ViT-B/16 checkpoint the benchmarks below reuse.
timeout 100 "$bin/bench_model" --shape vit-b-16 --keep "$model" --batch 1 --reps 1 --no-tta >/dev/null
timeout 100 "$bin/gpu_agreement" --model "$model" --batch 4

echo "== 1. cliptta, ViT-B/16 random weights, cuda:0"
for batch in 32 64 128; do
    with_gpu_peak timeout 100 "$bin/bench_model" --device cuda:0 --shape vit-b-16 --keep "$model" \
        --batch "$batch" --reps 3
done

echo "== 2. side by side with PyTorch on the same GPU"
CLIPTTA_BENCH_PYTHON=python3 CLIPTTA_BENCH_BIN=$bin/bench_model PYTHONUNBUFFERED=1 \
    timeout 150 python3 scripts/bench_pytorch.py --device cuda --model "$model" --batch 32 --batch 64 --batch 128 --reps 3

echo "== 3. the demo on the GPU"
with_gpu_peak timeout 120 "$bin/cliptta" demo --device cuda --lake data/lake --model data/models/default --out "$out/demo"
