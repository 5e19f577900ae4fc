#!/usr/bin/env bash
# Throughput of the same query in one process and on a Ballista cluster of 1 and 2 executors
# on this machine (scheduler and executors on loopback), for BENCHMARKS.md ("Scale-out").
#
#   cargo build --features ballista && scripts/bench_cluster.sh [METHOD...]
#
# Default methods: zero_shot cliptta. Needs the `ballista` build of target/debug/cliptta
# (override with CLIPTTA_BIN). Prints one Markdown row per method: wall seconds of the
# `cliptta sql` process (planning, model loading in every executor, labelling, Parquet write)
# and images/s; checks that every run wrote the lake's 1,000 rows exactly once.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CLIPTTA_BIN:-target/debug/cliptta}
"$BIN" cluster --help >/dev/null 2>&1 || { echo "$BIN lacks the cluster subcommand: cargo build --features ballista" >&2; exit 2; }
METHODS=("$@")
[ ${#METHODS[@]} -gt 0 ] || METHODS=(zero_shot cliptta)
LAKE=$(realpath data/lake/images)
MODEL=$(realpath data/models/default)
CLASSES='t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot'
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

query() { # METHOD OUT
  echo "COPY (SELECT location, label, confidence FROM cliptta('$LAKE/', 'classes', '$CLASSES', 'model', '$MODEL', \
'method', '$1', 'partitions', 4, 'reset', 'per_partition')) TO '$2' STORED AS PARQUET"
}

rows_ok() { # PARQUET_PATH: every one of the lake's 1,000 images exactly once
  local got
  got=$("$BIN" sql "CREATE EXTERNAL TABLE written STORED AS PARQUET LOCATION '$1/'; SELECT count(*) || '/' || count(DISTINCT location) AS n FROM written" | grep -o '[0-9]*/[0-9]*' | head -1)
  [ "$got" = "1000/1000" ] || { echo "expected 1000 rows with 1000 distinct locations in $1, got $got" >&2; return 1; }
}

timed() { # prints wall seconds of "$@"
  local start end
  start=$(date +%s.%N)
  "$@" >"$WORK/last.log" 2>&1 || { cat "$WORK/last.log" >&2; return 1; }
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.1f}')"
}

start_cluster() { # N executors -> sets SCHED
  local port n=$1
  port=$(free_port)
  "$BIN" cluster scheduler --bind "127.0.0.1:$port" >"$WORK/sched.log" 2>&1 &
  PIDS+=($!)
  sleep 2
  for i in $(seq 1 "$n"); do
    "$BIN" cluster executor --scheduler "localhost:$port" --flight-port "$(free_port)" --grpc-port "$(free_port)" \
      --work-dir "$WORK/exec$i" >"$WORK/exec$i.log" 2>&1 &
    PIDS+=($!)
  done
  sleep 4
  SCHED="df://127.0.0.1:$port"
}

stop_cluster() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }

echo "| method | single process | 1 executor | 2 executors |"
echo "|---|---|---|---|"
for m in "${METHODS[@]}"; do
  row="| \`$m\` |"
  out="$WORK/single-$m"
  s=$(timed "$BIN" sql "$(query "$m" "$out")"); rows_ok "$out"
  row="$row $s s ($(python3 -c "print(f'{1000/$s:.1f}')") images/s) |"
  for n in 1 2; do
    mkdir -p "$WORK/cluster-$m-$n"
    start_cluster "$n"
    out="$WORK/cluster-$m-$n/out"
    s=$(timed "$BIN" sql --cluster "$SCHED" "$(query "$m" "$out")"); rows_ok "$out"
    stop_cluster
    row="$row $s s ($(python3 -c "print(f'{1000/$s:.1f}')") images/s) |"
  done
  echo "$row"
done
