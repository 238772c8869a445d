#!/usr/bin/env bash
# Instructions per request that teamkey adds, counted by callgrind: the
# bench server of each framework runs under valgrind; the same N requests
# (X-API-Key included) go to the open side, then to the guarded side, one
# keep-alive connection, and callgrind dumps its counters after each batch.
# Unlike requests/s, the counts repeat to within ~1% whatever else the
# machine does; they count user-space instructions only (no kernel, no
# cache misses), and valgrind hides SHA-NI, so SHA-256 runs in software.
#
#   benches/http-callgrind.sh                  # axum and actix, 2,000 requests
#   FRAMEWORKS=actix REQUESTS=5000 TOP=25 benches/http-callgrind.sh
#
# TOP=n also lists the n functions whose own cost differs most between the
# two sides (what the guarded request spends its extra instructions on).
#
# STORE=memory-limited: the key has a rate limit it never hits, and the
# same guarded side is also counted with a key without a limit, so the
# third line is what counting the request and writing the RateLimit headers
# add (and TOP lists where, limited minus unlimited).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
REQUESTS=${REQUESTS:-2000}
FRAMEWORKS=${FRAMEWORKS:-axum actix}
TOP=${TOP:-0}
STORE=${STORE:-memory}

cargo build --quiet --release --example bench_server --example bench_server_actix \
  --features axum,actix,sqlx-sqlite,sqlx-postgres
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# port requests key: sequential GETs on one connection; any non-200 fails.
client() {
  python3 - "$@" <<'EOF'
import http.client, sys
port, n, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
for _ in range(n):
    conn.request("GET", "/api/v1/scans", headers={"X-API-Key": key})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"status {response.status}")
EOF
}

# Per function, own instructions per request in a dump (names uncompressed).
self_costs() {
  python3 - "$@" <<'EOF'
import collections, sys
def own(path):
    cost, fn, after_call = collections.Counter(), None, False
    for line in open(path, errors="replace"):
        if line.startswith("fn="):
            fn = line[3:].strip()
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False  # the inclusive cost of a call, not own cost
            elif fn is not None:
                parts = line.split()
                if len(parts) > 1:
                    cost[fn] += int(parts[1])
    return cost
open_side, auth_side, n, top = own(sys.argv[1]), own(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
diff = {f: (auth_side[f] - open_side[f]) / n for f in set(open_side) | set(auth_side)}
for f, d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
    print(f"  {d:+8.0f}  {f[:140]}")
EOF
}

for framework in $FRAMEWORKS; do
  server="$target_dir/release/examples/bench_server"
  [ "$framework" = actix ] && server="${server}_actix"
  out="$work/$framework"; mkdir -p "$out"
  valgrind --tool=callgrind --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$out/callgrind.out" "$server" "$STORE" >"$out/stdout" 2>"$out/stderr" &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q KEY= "$out/stdout" && break
    kill -0 "$pid" 2>/dev/null || { cat "$out/stderr" >&2; exit 1; }
    sleep 0.1
  done
  read -r key auth open unlimited < <(sed -E 's/KEY=(\S+) AUTH=(\S+) OPEN=(\S+)( UNLIMITED_KEY=(\S+))?/\1 \2 \3 \5/' "$out/stdout")
  # Warm up every side (first-request allocations, lazy statics), then count.
  client "$open" 300 "$key"
  client "$auth" 300 "$key"
  [ -n "${unlimited:-}" ] && client "$auth" 300 "$unlimited"
  callgrind_control --zero "$pid" >/dev/null 2>&1
  client "$open" "$REQUESTS" "$key"
  callgrind_control --dump=open "$pid" >/dev/null 2>&1
  client "$auth" "$REQUESTS" "$key"
  callgrind_control --dump=auth "$pid" >/dev/null 2>&1
  if [ -n "${unlimited:-}" ]; then
    client "$auth" "$REQUESTS" "$unlimited"
    callgrind_control --dump=free "$pid" >/dev/null 2>&1
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  open_dump=$(grep -l '^desc: Trigger: .*dump open' "$out"/callgrind.out.*)
  auth_dump=$(grep -l '^desc: Trigger: .*dump auth' "$out"/callgrind.out.*)
  open_ir=$(awk '/^summary:/ {print $2}' "$open_dump")
  auth_ir=$(awk '/^summary:/ {print $2}' "$auth_dump")
  python3 -c "
n = $REQUESTS; o, a = $open_ir / n, $auth_ir / n
print(f'$framework $STORE: without auth {o:,.0f} instructions/request, with auth {a:,.0f}: +{a - o:,.0f} ({a / o:.3f}x)')"
  if [ -n "${unlimited:-}" ]; then
    free_dump=$(grep -l '^desc: Trigger: .*dump free' "$out"/callgrind.out.*)
    free_ir=$(awk '/^summary:/ {print $2}' "$free_dump")
    python3 -c "
n = $REQUESTS; f, a = $free_ir / n, $auth_ir / n
print(f'$framework $STORE: auth without a limit {f:,.0f} instructions/request, limit on, never hit {a:,.0f}: +{a - f:,.0f} ({a / f:.3f}x)')"
    if (( TOP > 0 )); then self_costs "$free_dump" "$auth_dump" "$REQUESTS" "$TOP"; fi
  elif (( TOP > 0 )); then
    self_costs "$open_dump" "$auth_dump" "$REQUESTS" "$TOP"
  fi
done
