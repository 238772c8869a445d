#!/usr/bin/env bash
# Two builds of a bench server, loaded at the same time: requests/s of A's
# guarded side over B's, median of rounds. For "did this change make a
# request cheaper": build the bench servers before and after the change,
# keep copies of the binaries, and pass them.
#
#   cargo build --release --example bench_server --features axum,actix,sqlx-sqlite,sqlx-postgres
#   cp "${CARGO_TARGET_DIR:-target}/release/examples/bench_server" /tmp/after   # and /tmp/before, from the other build
#   benches/http-ab.sh /tmp/after /tmp/before                 # memory store, 8 rounds of 3 s
#   STORE=memory-limited ROUNDS=10 DURATION=4s benches/http-ab.sh /tmp/after /tmp/before
#
# As MODE=paired in http-throughput.sh: both servers share the last CPU
# (taskset), each loaded by its own wrk on the other CPUs, so the ratio of
# their requests/s is the ratio of what a request costs, and the host's
# noise hits both in the same seconds. Needs wrk, python3, taskset and two
# CPUs. SIDE=OPEN compares the unguarded sides (a check of the method:
# about 1.0).
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 SERVER_A SERVER_B" >&2; exit 1; }
for tool in wrk python3 taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
last_cpu=$(($(nproc) - 1))
((last_cpu > 0)) || { echo "needs two CPUs" >&2; exit 1; }
STORE=${STORE:-memory}
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-32}
SIDE=${SIDE:-AUTH}
case "$SIDE" in AUTH | OPEN) ;; *) echo "SIDE is AUTH or OPEN" >&2; exit 1 ;; esac

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for side in a b; do
  bin=$1
  shift
  taskset -c "$last_cpu" "$bin" "$STORE" >"$work/$side.out" 2>&1 &
  pids+=($!)
done
field() { grep -o "$2=[^ ]*" "$work/$1.out" | head -1 | cut -d= -f2; }
for _ in $(seq 100); do
  [ -n "$(field a "$SIDE")" ] && [ -n "$(field b "$SIDE")" ] && break
  sleep 0.2
done
[ -n "$(field a "$SIDE")" ] && [ -n "$(field b "$SIDE")" ] || { cat "$work"/*.out >&2; exit 1; }

load() { # side -> requests/s
  taskset -c "0-$((last_cpu - 1))" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" \
    -H "X-API-Key: $(field "$1" KEY)" "http://127.0.0.1:$(field "$1" "$SIDE")/api/v1/scans" |
    awk '/Requests\/sec/ {print $2}'
}
ratios=()
for round in $(seq "$ROUNDS"); do
  load a >"$work/a.rps" &
  loading_a=$!
  load b >"$work/b.rps"
  wait "$loading_a"
  a=$(cat "$work/a.rps")
  b=$(cat "$work/b.rps")
  ratio=$(python3 -c "print(f'{$a / $b:.3f}')")
  ratios+=("$ratio")
  echo "round $round: A $a req/s   B $b req/s   A/B $ratio"
done
python3 -c 'import statistics, sys; r = sorted(map(float, sys.argv[1:])); print(f"median A/B {statistics.median(r):.3f} (rounds {r[0]:.3f} to {r[-1]:.3f})")' "${ratios[@]}"
