#!/usr/bin/env bash
# The distribution-shift benchmark (bench/examples/shift_benchmark.rs) on a GPU machine, with the
# binary gpu_build.sh made and the datasets carried from this machine (the GPU machine has no
# network):
#
#   here:  scripts/gpu_build.sh && scripts/gpu_shift.sh --pack      # -> target/gpu-data
#   there: scripts/gpu_shift.sh --images 10000 --open-set --methods zero_shot
#
# Arguments go to shift_benchmark, which runs on cuda:0; rows print as each corruption ends.
set -uo pipefail
cd "$(dirname "$0")/.."
data=target/gpu-data
if [[ ${1:-} == --pack ]]; then
    scripts/install-datasets.sh >/dev/null
    mkdir -p "$data"
    cp /usr/share/datasets/fashion-mnist/t10k-*-idx?-ubyte.gz "${CLIPTTA_DATA_DIR:-$HOME/.cache/cliptta}/mnist_5k.csv.gz" "$data"/
    ls -la "$data"
    exit
fi
bin=target/gpu-bin
out=${OUT:-target/gpu-check}
mkdir -p "$out"
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
CLIPTTA_FASHION_MNIST_DIR=$data CLIPTTA_DATA_DIR=$data PYTHONUNBUFFERED=1 \
    "$bin/shift_benchmark" --device cuda:0 --model data/models/default "$@" 2>&1 | tee "$out/shift.log"
