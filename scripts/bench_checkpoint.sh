#!/usr/bin/env bash
# Checkpoint overhead and resume time of `cliptta label` (BENCHMARKS.md, "Checkpointed jobs").
#
#   scripts/bench_checkpoint.sh LAKE METHOD [RUNS]
#
# Times, on the same lake and settings: a plain `--out labels.parquet` run (no checkpoint), a
# checkpointed `--out DIR/` run at the default checkpoint_every and at checkpoint_every 1, and a
# rerun of the finished checkpointed job (it replays every committed row: the resume cost).
# Each is run RUNS times (default 2); the best wall time is printed. Needs a built
# `target/debug/cliptta` (`cargo build`).
set -euo pipefail
lake=${1:?lake directory}
method=${2:?method}
runs=${3:-2}
bin=${CLIPTTA_BIN:-target/debug/cliptta}
classes="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

best() { # best wall seconds of RUNS runs of "$@"; each run gets a fresh output unless KEEP=1
    local best=""
    for _ in $(seq "$runs"); do
        [ "${KEEP:-0}" = 1 ] || rm -rf "$work/out" "$work/out.parquet"
        local start end
        start=$(date +%s.%N)
        "$@" >"$work/last.out"
        end=$(date +%s.%N)
        local t
        t=$(awk "BEGIN { print $end - $start }")
        if [ -z "$best" ] || awk "BEGIN { exit !($t < $best) }"; then best=$t; fi
    done
    printf '%.2f' "$best"
}

common=(label "$lake" --classes "$classes" --method "$method" --quiet)
plain=$(best "$bin" "${common[@]}" --out "$work/out.parquet")
committing() { sed -n 's/.*commits in this run (\(.*\) s committing).*/\1/p' "$work/last.out"; }
every10=$(best "$bin" "${common[@]}" --out "$work/out/")
commit10=$(committing)
every1=$(best "$bin" "${common[@]}" --out "$work/out/" --checkpoint-every 1)
commit1=$(committing)
"$bin" "${common[@]}" --out "$work/out/" >/dev/null
resume=$(KEEP=1 best "$bin" "${common[@]}" --out "$work/out/")
images=$(find "$lake" -type f \( -iname '*.png' -o -iname '*.jpg' \) | wc -l)
pct() { awk "BEGIN { printf \"%+.2f\", 100 * ($1 - $plain) / $plain }"; }
echo "lake=$lake images=$images method=$method runs=$runs machine=$(nproc) cores, $(date -u +%F)"
echo "no checkpoint:              ${plain} s"
echo "checkpoint_every 10 (default): ${every10} s ($(pct "$every10")%), ${commit10} s of it committing"
echo "checkpoint_every 1:         ${every1} s ($(pct "$every1")%), ${commit1} s of it committing"
echo "rerun of the finished job:  ${resume} s (replays every row)"
