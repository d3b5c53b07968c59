#!/usr/bin/env bash
# Benchmark (not a test): tandem-server beside nginx, same repository directory, same run.
#
#   bench/server.sh            # DURATION=5s THREADS=2 CONNECTIONS=64 ROUNDS=3 by default
#
# Two workloads, each with wrk against 127.0.0.1:
#   poll-304   conditional GET of channels/stable.json with If-None-Match (the polling path)
#   range-1MiB GET of a 1 MiB Range of a 32 MiB bundle (resume / delta path), rotating offsets
# Prints requests/s and p99 latency for both servers and the ratios tandem/nginx
# (goal: requests/s ratio >= 0.9, p99 no worse than nginx's). Installs wrk, nginx-light and curl with apt-get when missing.
set -euo pipefail

DURATION=${DURATION:-5s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
TANDEM_PORT=${TANDEM_PORT:-18480}
NGINX_PORT=${NGINX_PORT:-18481}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if ! need wrk || ! need nginx || ! need curl; then
    echo "installing wrk, nginx-light, curl (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends wrk nginx-light curl >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "building tandem-server (release)" >&2
cargo build --release -q -p server --bin tandem-server --manifest-path "$ROOT/Cargo.toml"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SERVER="$TARGET_DIR/release/tandem-server"

WORK=$(mktemp -d /tmp/tandem-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers may run as another user
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# The repository: a channel file of realistic size and a 32 MiB bundle.
REPO="$WORK/repo"
mkdir -p "$REPO/channels" "$REPO/bundles" "$WORK/data" "$WORK/nginx"
python3 - "$REPO/channels/stable.json" <<'PY'
import json, sys
doc = {"signed": {"channel": "stable", "version": 7, "expires": "2030-01-01T00:00:00Z",
       "release": {"product": "demo-os", "version": "2.0.0", "security_version": 1,
                   "bundle": "bundles/demo-os-2.0.0.tandem", "size": 33554432,
                   "manifest_sha256": "ab" * 32},
       "rollout": {"percent": 30, "salt": "8f0e" * 8}},
       "signatures": [{"keyid": "%064x" % i, "sig": "cd" * 64} for i in range(3)]}
open(sys.argv[1], "w").write(json.dumps(doc, indent=2))
PY
head -c $((32 * 1024 * 1024)) /dev/urandom > "$REPO/bundles/demo-os-2.0.0.tandem"
chmod -R a+rX "$REPO"

"$SERVER" serve --repo "$REPO" --listen "127.0.0.1:$TANDEM_PORT" --data "$WORK/data" \
    2>"$WORK/tandem.log" &
PIDS+=($!)

cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    types { application/json json; application/octet-stream tandem; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $REPO;
    }
}
NGX
"$NGINX" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=($!)

wait_up() {
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$1/channels/stable.json" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2; cat "$WORK"/tandem.log "$WORK"/nginx/error.log >&2; exit 1
}
wait_up "$TANDEM_PORT"
wait_up "$NGINX_PORT"

# wrk scripts. The ETag differs per server, so it is passed in.
cat > "$WORK/poll.lua" <<'LUA'
local etag = os.getenv("BENCH_ETAG")
wrk.headers["If-None-Match"] = etag
LUA
cat > "$WORK/range.lua" <<'LUA'
local mib = 1024 * 1024
local i = 0
request = function()
    local start = (i % 31) * mib
    i = i + 1
    return wrk.format("GET", nil, { ["Range"] = "bytes=" .. start .. "-" .. (start + mib - 1) })
end
LUA

etag_of() {
    curl -fsSI "http://127.0.0.1:$1/channels/stable.json" | tr -d '\r' \
        | awk 'tolower($1) == "etag:" { print $2 }'
}

check() {  # port -> checks the 304 and 206 paths answer as expected before measuring
    local port=$1 etag code
    etag=$(etag_of "$port")
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" \
        "http://127.0.0.1:$port/channels/stable.json")
    [ "$code" = 304 ] || { echo "port $port: conditional GET answered $code" >&2; exit 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Range: bytes=0-1048575" \
        "http://127.0.0.1:$port/bundles/demo-os-2.0.0.tandem")
    [ "$code" = 206 ] || { echo "port $port: range GET answered $code" >&2; exit 1; }
}
check "$TANDEM_PORT"
check "$NGINX_PORT"
LOAD=$(cut -d" " -f1-3 /proc/loadavg)

# run NAME PORT SCRIPT PATH -> "rps p99_ms errors"
run() {
    local port=$2 script=$3 path=$4 out
    out=$(BENCH_ETAG=$(etag_of "$port") wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
        --latency -s "$script" "http://127.0.0.1:$port$path")
    echo "$out" > "$WORK/wrk-$1-$port.txt"
    python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
errors = 0
for pat in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
    m = re.search(pat, out)
    if m:
        errors += sum(int(g) for g in m.groups())
print(f"{rps:.0f} {p99:.2f} {errors}")
PY
}

# Interleaved rounds (the order of the two servers alternates), medians reported: on a shared
# 2-core machine other load comes and goes, and both servers should see the same share of it.
printf '\n%-6s %-11s %-7s %12s %10s %7s\n' round workload server "requests/s" "p99 ms" errors
: > "$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
    order="tandem nginx"; [ $((round % 2)) -eq 0 ] && order="nginx tandem"
    for w in poll range; do
        if [ "$w" = poll ]; then script="$WORK/poll.lua"; path=/channels/stable.json
        else script="$WORK/range.lua"; path=/bundles/demo-os-2.0.0.tandem; fi
        for s in $order; do
            port=$TANDEM_PORT; [ "$s" = nginx ] && port=$NGINX_PORT
            read -r rps p99 errs < <(run "$w" "$port" "$script" "$path")
            echo "$w $s $rps $p99 $errs" >> "$WORK/results"
            printf '%-6s %-11s %-7s %12s %10s %7s\n' "$round" "$w" "$s" "$rps" "$p99" "$errs"
        done
    done
done

echo
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(w, s, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == w and r[1] == s)
for w, name in (("poll", "poll-304 (conditional GET, 304)"), ("range", "range-1MiB (206)")):
    t, n = med(w, "tandem", 2), med(w, "nginx", 2)
    tp, np_ = med(w, "tandem", 3), med(w, "nginx", 3)
    ratio = t / n if n else 0.0
    verdict = "meets" if ratio >= 0.9 else "BELOW"
    p99 = "no worse than" if tp <= np_ else "WORSE than"
    print(f"{name}: median requests/s tandem {t:.0f}, nginx {n:.0f} -> {ratio:.2f}x "
          f"({verdict} the 0.9x goal); median p99 tandem {tp:.2f} ms, nginx {np_:.2f} ms "
          f"({p99} nginx's)")
errors = sum(int(r[4]) for r in rows)
print(f"errors (non-2xx/3xx, socket errors) over all runs: {errors}")
PY
echo "(machine: $(nproc) cores, load before the run: $LOAD; wrk -t$THREADS -c$CONNECTIONS -d$DURATION x $ROUNDS rounds on the same host)"
