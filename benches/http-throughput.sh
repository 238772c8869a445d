#!/usr/bin/env bash
# Requests per second of GET /api/v1/scans with teamkey (axum extractor,
# actix-web middleware + extractor) vs the same handler without auth, wrk on
# loopback. Both sides get the same request, X-API-Key header included (the
# open side ignores it): parsing a header is the HTTP stack's work, not
# teamkey's.
#
# Needs wrk, python3 and taskset (util-linux), and builds the two bench
# servers in release first. Each round prints requests/s and server CPU
# per request of both sides; "ratio" is with-auth / without-auth
# requests/s of that round (1.000: auth is free), and the figure is the
# median over the rounds. A run of one store on one framework takes about
# ROUNDS x DURATION (twice that for memory-limited) plus 10 s.
#
# MODE=paired (the default) measures both sides at the same time: two
# server processes share the last CPU (taskset), each loaded by its own
# wrk on the other CPUs, one through its guarded port, the other through
# its open port; the instances swap sides every round. The scheduler gives each
# process half the CPU, so the ratio of their requests/s is the ratio of
# what a request costs, and whatever else the host does hits both sides
# in the same seconds. (On this shared 2-vCPU machine, rounds run one
# after the other swung from 0.7 to 1.3 within a minute; paired rounds
# of one store within 0.05 to 0.17.) MODE=alternate runs one server, the sides
# one after the other, the order alternating by round: the earlier method,
# for machines with a quiet core of their own.
#
# Each round also reports the server's CPU time per request (user +
# system, from /proc); the CPU ratio is without / with auth, so 1.000 means
# auth costs no CPU.
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
# each round also loads the guarded side with both keys: the ratio "limit
# on, never hit / no limit".
#
# TEAMKEY_BENCH_STAND_IN=<ns>: the guarded side verifies nothing; its
# extractor (axum), or a middleware leaving a caller for web::ReqData
# (actix, store memory only), spins for <ns> nanoseconds instead. 0
# measures what any extractor (or middleware and extractor) costs; a known
# <ns> shows which ratio that much CPU per request gives on this host, the
# scale to read auth's ratio against. With memory-limited (axum), the
# stand-in's "limit on / no limit" pair is two RateLimit-shaped headers /
# none: what the headers alone cost.
#
# TEAMKEY_BENCH_AXUM=guard: axum's guarded side is the `RequireApiKey` layer
# with the `Authenticated` extractor behind it (the Gecko example's and the
# README's setup, and what the actix server always runs) instead of the
# extractor alone (`extractor`, the default); its lines say "axum-guard".
set -euo pipefail
cd "$(dirname "$0")/.."

command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-4}
MODE=${MODE:-paired}
stores=("${@:-memory sqlite}")
FRAMEWORKS=${FRAMEWORKS:-axum actix}
case "$MODE" in paired | alternate) ;; *) echo "MODE is paired or alternate" >&2; exit 1 ;; esac
case "${TEAMKEY_BENCH_AXUM:-extractor}" in
  extractor) axum_label=axum ;;
  guard) axum_label=axum-guard ;;
  *) echo "TEAMKEY_BENCH_AXUM is guard or extractor" >&2; exit 1 ;;
esac

cargo build --quiet --release --example bench_server --example bench_server_actix \
  --features axum,actix,sqlx-sqlite,sqlx-postgres
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

# Servers on the last CPU, wrk on the others; nothing pinned on one CPU.
last_cpu=$(($(nproc) - 1))
if ((last_cpu > 0)) && command -v taskset >/dev/null; then
  server_cpu=(taskset -c "$last_cpu")
  client_cpu=(taskset -c "0-$((last_cpu - 1))")
else
  server_cpu=()
  client_cpu=()
  if [ "$MODE" = paired ]; then
    echo "MODE=paired needs taskset and two CPUs to give both servers one CPU to share; without them the ratios are not what a request costs (use MODE=alternate)" >&2
    exit 1
  fi
fi

ticks_per_second=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk's report and the server's CPU ticks over it -> "requests/s CPU-µs/request".
summarize() {
  awk -v ticks="$2" -v hz="$ticks_per_second" '
    / requests in / {n = $1}
    /Requests\/sec/ {rps = $2}
    END {printf "%s %.2f\n", rps, ticks * 1e6 / hz / n}' "$1"
}

# pid url header -> "requests/s CPU-µs/request" of one wrk run alone.
measure() {
  local before after report
  report=$(mktemp)
  before=$(cpu_ticks "$1")
  "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "$3" "$2" >"$report"
  after=$(cpu_ticks "$1")
  summarize "$report" $((after - before))
  rm -f "$report"
}

# pid1 url1 header1 pid2 url2 header2 -> "rps1 cpu1 rps2 cpu2": both wrk
# runs at once, each against its own server process.
measure_pair() {
  local b1 b2 a1 a2 r1 r2 w1 w2
  r1=$(mktemp) r2=$(mktemp)
  b1=$(cpu_ticks "$1") b2=$(cpu_ticks "$4")
  "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "$3" "$2" >"$r1" &
  w1=$!
  "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "$6" "$5" >"$r2" &
  w2=$!
  wait "$w1" "$w2"
  a1=$(cpu_ticks "$1") a2=$(cpu_ticks "$4")
  echo "$(summarize "$r1" $((a1 - b1))) $(summarize "$r2" $((a2 - b2)))"
  rm -f "$r1" "$r2"
}

# Started servers: pids[i], and each one's key, unlimited key, ports.
pids=() keys=() unlimited_keys=() auth_ports=() open_ports=() outs=() errs=()
stop_servers() {
  # On SIGTERM a server stops gracefully and removes its database or schema.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "${outs[@]}" "${errs[@]}"
  pids=() keys=() unlimited_keys=() auth_ports=() open_ports=() outs=() errs=()
}
trap stop_servers EXIT

# server store -> starts one more server; false if it did not come up.
start_server() {
  local out err pid key auth open unlimited
  out=$(mktemp) err=$(mktemp)
  "${server_cpu[@]}" "$1" "$2" >"$out" 2>"$err" &
  pid=$!
  pids+=("$pid") outs+=("$out") errs+=("$err")
  for _ in $(seq 1 300); do
    grep -q KEY= "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q KEY= "$out"; then
    echo "$(basename "$1") $2: server did not start: $(cat "$err")" >&2
    return 1
  fi
  read -r key auth open unlimited < <(sed -E 's/KEY=(\S+) AUTH=(\S+) OPEN=(\S+)( UNLIMITED_KEY=(\S+))?/\1 \2 \3 \5/' "$out")
  keys+=("$key") auth_ports+=("$auth") open_ports+=("$open") unlimited_keys+=("${unlimited:-}")
}

ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
median() { printf '%s\n' "$@" | python3 -c "import sys, statistics; print(f'{statistics.median(float(x) for x in sys.stdin):.3f}')"; }
url() { echo "http://127.0.0.1:$1/api/v1/scans"; }

failed=0
for framework in $FRAMEWORKS; do
server="$target_dir/release/examples/bench_server"
label=$axum_label
if [ "$framework" = actix ]; then
  server="${server}_actix"
  label=actix
fi
for store in ${stores[*]}; do
  instances=1
  [ "$MODE" = paired ] && instances=2
  started=1
  for _ in $(seq 1 "$instances"); do start_server "$server" "$store" || started=0; done
  if ((!started)); then
    stop_servers
    failed=1
    continue
  fi
  limited=0
  [ -n "${unlimited_keys[0]}" ] && limited=1
  # Warm up every side of every instance.
  for i in "${!pids[@]}"; do
    header="X-API-Key: ${keys[$i]}"
    "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d2s -H "$header" "$(url "${open_ports[$i]}")" >/dev/null
    "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d2s -H "$header" "$(url "${auth_ports[$i]}")" >/dev/null
    if ((limited)); then
      "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d2s -H "X-API-Key: ${unlimited_keys[$i]}" "$(url "${auth_ports[$i]}")" >/dev/null
    fi
  done
  ratios=() cpu_ratios=() limit_ratios=() limit_cpu_ratios=()
  for round in $(seq 1 "$ROUNDS"); do
    if [ "$MODE" = paired ]; then
      # The instances swap sides every round.
      a=$(((round + 1) % 2)) b=$((round % 2))
      read -r with cpu_with without cpu_without < <(measure_pair \
        "${pids[$a]}" "$(url "${auth_ports[$a]}")" "X-API-Key: ${keys[$a]}" \
        "${pids[$b]}" "$(url "${open_ports[$b]}")" "X-API-Key: ${keys[$b]}")
      if ((limited)); then
        read -r limit_on cpu_limit_on free cpu_free < <(measure_pair \
          "${pids[$a]}" "$(url "${auth_ports[$a]}")" "X-API-Key: ${keys[$a]}" \
          "${pids[$b]}" "$(url "${auth_ports[$b]}")" "X-API-Key: ${unlimited_keys[$b]}")
      fi
    else
      # Alternate which side goes first, so drift favours neither.
      sides=(with without)
      ((round % 2)) || sides=(without with)
      for side in "${sides[@]}"; do
        if [ "$side" = with ]; then
          read -r with cpu_with < <(measure "${pids[0]}" "$(url "${auth_ports[0]}")" "X-API-Key: ${keys[0]}")
        else
          read -r without cpu_without < <(measure "${pids[0]}" "$(url "${open_ports[0]}")" "X-API-Key: ${keys[0]}")
        fi
      done
      if ((limited)); then
        read -r free cpu_free < <(measure "${pids[0]}" "$(url "${auth_ports[0]}")" "X-API-Key: ${unlimited_keys[0]}")
        read -r limit_on cpu_limit_on < <(measure "${pids[0]}" "$(url "${auth_ports[0]}")" "X-API-Key: ${keys[0]}")
      fi
    fi
    ratios+=("$(ratio "$with" "$without")")
    cpu_ratios+=("$(ratio "$cpu_without" "$cpu_with")")
    printf '%-6s %-15s round %s: without auth %10s req/s %6s µs CPU/req   with auth %10s req/s %6s µs CPU/req   ratio %s (CPU %s)\n' \
      "$label" "$store" "$round" "$without" "$cpu_without" "$with" "$cpu_with" "${ratios[-1]}" "${cpu_ratios[-1]}"
    if ((limited)); then
      limit_ratios+=("$(ratio "$limit_on" "$free")")
      limit_cpu_ratios+=("$(ratio "$cpu_free" "$cpu_limit_on")")
      printf '%-6s %-15s round %s: auth, no limit %10s req/s %6s µs CPU/req   limit on, never hit %10s req/s %6s µs CPU/req   ratio %s (CPU %s)\n' \
        "$label" "$store" "$round" "$free" "$cpu_free" "$limit_on" "$cpu_limit_on" "${limit_ratios[-1]}" "${limit_cpu_ratios[-1]}"
    fi
  done
  echo "$label $store ($MODE)  median ratio (with / without auth): $(median "${ratios[@]}")   CPU per request (without / with): $(median "${cpu_ratios[@]}")"
  if ((limited)); then
    echo "$label $store ($MODE)  median ratio (limit on, never hit / auth without limits): $(median "${limit_ratios[@]}")   CPU per request (no limit / limit on): $(median "${limit_cpu_ratios[@]}")"
  fi
  stop_servers
done
done
exit "$failed"
