#!/usr/bin/env bash
# Requests per second of GET /api/v1/scans with teamkey (axum extractor,
# actix-web middleware + extractor) vs the same handler without auth: one
# server process per framework, wrk on loopback, rounds alternated so that
# machine noise hits both sides alike.
#
# Both sides get the same request, X-API-Key header included (the open side
# ignores it): parsing a header is the HTTP stack's work, not teamkey's.
#
# Besides requests/s, each round reports the server's CPU time per request
# (user + system, from /proc): on a shared machine the requests/s of a round
# swing with whatever else runs, the CPU a request costs much less. The CPU
# ratio is without / with auth, so 1.000 means auth costs no CPU.
#
#   benches/http-throughput.sh                 # axum and actix, memory and sqlite
#   FRAMEWORKS=actix DURATION=8s ROUNDS=6 benches/http-throughput.sh memory
#   benches/http-throughput.sh postgres postgres-cached
#   benches/http-throughput.sh memory memory-limited   # what a rate limit costs
#
# Stores: memory, memory-limited, sqlite, sqlite-cached, postgres,
# postgres-cached. postgres connects to TEAMKEY_BENCH_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/test), in a schema of its own that the
# server drops when it stops.
#
# memory-limited: the key has a rate limit it never hits (LocalRateLimiter,
# a million requests a second), so every request is counted and answered
# with the RateLimit headers (on axum the server adds AddRateLimitHeaders
# around the extractor). Its server also prints a key without a limit, and
# each round loads the authenticated side with both keys, one after the
# other: the ratio "limit on, never hit / no limit" comes from one server,
# one round at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-4}
stores=("${@:-memory sqlite}")
FRAMEWORKS=${FRAMEWORKS:-axum actix}

cargo build --quiet --release --example bench_server --example bench_server_actix \
  --features axum,actix,sqlx-sqlite,sqlx-postgres
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

ticks_per_second=$(getconf CLK_TCK)
# url header -> "requests/s server-CPU-µs/request": the server's user+system
# time over the run (from /proc), per request served. Other load on the
# machine lowers requests/s, but hardly what each request costs the server.
measure() {
  local before after report
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  report=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "$2" "$1")
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  awk -v ticks=$((after - before)) -v hz="$ticks_per_second" '
    / requests in / {n = $1}
    /Requests\/sec/ {rps = $2}
    END {printf "%s %.2f\n", rps, ticks * 1e6 / hz / n}' <<<"$report"
}

failed=0
for framework in $FRAMEWORKS; do
server="$target_dir/release/examples/bench_server"
[ "$framework" = actix ] && server="${server}_actix"
for store in ${stores[*]}; do
  out=$(mktemp)
  err=$(mktemp)
  "$server" "$store" >"$out" 2>"$err" &
  pid=$!
  # On SIGTERM the server stops gracefully and removes its database or schema.
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 300); do
    grep -q KEY= "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q KEY= "$out"; then
    echo "$framework $store: server did not start: $(cat "$err")" >&2
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    trap - EXIT
    rm -f "$out" "$err"
    failed=1
    continue
  fi
  read -r key auth open unlimited < <(sed -E 's/KEY=(\S+) AUTH=(\S+) OPEN=(\S+)( UNLIMITED_KEY=(\S+))?/\1 \2 \3 \5/' "$out")
  header="X-API-Key: $key"
  unlimited_header="X-API-Key: ${unlimited:-}"
  # Warm up every side.
  wrk -t1 -c"$CONNECTIONS" -d2s -H "$header" "http://127.0.0.1:$open/api/v1/scans" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d2s -H "$header" "http://127.0.0.1:$auth/api/v1/scans" >/dev/null
  [ -n "${unlimited:-}" ] && wrk -t1 -c"$CONNECTIONS" -d2s -H "$unlimited_header" "http://127.0.0.1:$auth/api/v1/scans" >/dev/null
  ratios=()
  cpu_ratios=()
  limit_ratios=()
  limit_cpu_ratios=()
  for round in $(seq 1 "$ROUNDS"); do
    # Alternate which side goes first, so drift favours neither. With a
    # key without a limit, it is measured right beside the limited one.
    if (( round % 2 )); then
      read -r without cpu_without < <(measure "http://127.0.0.1:$open/api/v1/scans" "$header")
      [ -n "${unlimited:-}" ] && read -r free cpu_free < <(measure "http://127.0.0.1:$auth/api/v1/scans" "$unlimited_header")
      read -r with cpu_with < <(measure "http://127.0.0.1:$auth/api/v1/scans" "$header")
    else
      read -r with cpu_with < <(measure "http://127.0.0.1:$auth/api/v1/scans" "$header")
      [ -n "${unlimited:-}" ] && read -r free cpu_free < <(measure "http://127.0.0.1:$auth/api/v1/scans" "$unlimited_header")
      read -r without cpu_without < <(measure "http://127.0.0.1:$open/api/v1/scans" "$header")
    fi
    ratio=$(python3 -c "print(f'{$with / $without:.3f}')")
    cpu_ratio=$(python3 -c "print(f'{$cpu_without / $cpu_with:.3f}')")
    ratios+=("$ratio")
    cpu_ratios+=("$cpu_ratio")
    printf '%-6s %-15s round %s: without auth %10s req/s %6s µs CPU/req   with auth %10s req/s %6s µs CPU/req   ratio %s (CPU %s)\n' \
      "$framework" "$store" "$round" "$without" "$cpu_without" "$with" "$cpu_with" "$ratio" "$cpu_ratio"
    if [ -n "${unlimited:-}" ]; then
      limit_ratio=$(python3 -c "print(f'{$with / $free:.3f}')")
      limit_cpu_ratio=$(python3 -c "print(f'{$cpu_free / $cpu_with:.3f}')")
      limit_ratios+=("$limit_ratio")
      limit_cpu_ratios+=("$limit_cpu_ratio")
      printf '%-6s %-15s round %s: auth, no limit %10s req/s %6s µs CPU/req   limit on, never hit %10s req/s %6s µs CPU/req   ratio %s (CPU %s)\n' \
        "$framework" "$store" "$round" "$free" "$cpu_free" "$with" "$cpu_with" "$limit_ratio" "$limit_cpu_ratio"
    fi
  done
  median() { printf '%s\n' "$@" | python3 -c "import sys, statistics; print(f'{statistics.median(float(x) for x in sys.stdin):.3f}')"; }
  echo "$framework $store  median ratio (with / without auth): $(median "${ratios[@]}")   CPU per request (without / with): $(median "${cpu_ratios[@]}")"
  if [ -n "${unlimited:-}" ]; then
    echo "$framework $store  median ratio (limit on, never hit / auth without limits): $(median "${limit_ratios[@]}")   CPU per request (no limit / limit on): $(median "${limit_cpu_ratios[@]}")"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  trap - EXIT
  rm -f "$out" "$err"
done
done
exit "$failed"
