#!/usr/bin/env bash
# Benchmark (not a test): a simulated fleet against tandem-server on loopback, once with the
# SQLite report store and once with PostgreSQL.
#
#   bench/fleet.sh       # NODES=10000 INTERVAL=60 SPEEDUP=10 DURATION=60 RETRY_PERCENT=10 RANGES=40
#                        # LEASE_GROUPS=100 REBOOT_SLOTS=1
#
# The load generator (server/examples/fleet.rs) runs NODES nodes. Each polls
# channels/stable.json with If-None-Match once per INTERVAL/SPEEDUP seconds (SPEEDUP
# compresses time: 10,000 nodes polling every 60 s is 167 polls/s; SPEEDUP=10 makes it 1,667
# polls/s, ten times the real rate), sends an `installed` and a `committed` report with
# their own ids at two random polls, re-sends RETRY_PERCENT % of them with the same id (a
# lost answer), and RANGES 1 MiB Range downloads of the bundle run beside. Before its
# `committed` report each node takes a reboot lease of one of LEASE_GROUPS groups
# (REBOOT_SLOTS slots each), asking again at each poll while the group is full, and
# releases it after. Printed per backend: sustained
# polls/s and reports/s, p50/p99 latency of polls, reports and lease requests (pre-reboot and
# steady-state, a busy answer included), the server's peak RSS, and the exactly-once check:
# rows stored == distinct (node, id) == reports sent, every node counted as committed in the
# status, and one lease granted per node. Goal: p99 < 50 ms at 10,000 nodes every 60 s.
# The generator shares the machine with the server: on 2 cores it takes CPU from it.
set -euo pipefail

NODES=${NODES:-10000}
INTERVAL=${INTERVAL:-60}
SPEEDUP=${SPEEDUP:-10}
DURATION=${DURATION:-60}
RETRY_PERCENT=${RETRY_PERCENT:-10}
RANGES=${RANGES:-40}
LEASE_GROUPS=${LEASE_GROUPS:-100}
REBOOT_SLOTS=${REBOOT_SLOTS:-1}
PORT=${PORT:-18490}
BACKENDS=${BACKENDS:-"sqlite postgres"}
TOKEN=bench-report-token-0123456789
ROOT=$(cd "$(dirname "$0")/.." && pwd)

pg_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) $(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)"); do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}
need() { command -v "$1" >/dev/null 2>&1; }
if [[ " $BACKENDS " == *" postgres "* ]] && ! pg_bin >/dev/null || ! need curl; then
    echo "installing postgresql, curl (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends postgresql curl >/dev/null
fi

echo "building tandem-server and the load generator (release)" >&2
cargo build --release -q -p server --bin tandem-server --example fleet --manifest-path "$ROOT/Cargo.toml"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SERVER="$TARGET_DIR/release/tandem-server"
FLEET="$TARGET_DIR/release/examples/fleet"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/tandem-fleet.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=""
PG_DATA=""
AS_PG=()
[ "$(id -u)" -eq 0 ] && AS_PG=(runuser -u postgres --)
stop_server() {
    [ -n "$SERVER_PID" ] && { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
    SERVER_PID=""
}
cleanup() {
    stop_server
    [ -n "$PG_DATA" ] && "${AS_PG[@]}" "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

REPO="$WORK/repo"
mkdir -p "$REPO/channels" "$REPO/bundles"
python3 - "$REPO/channels/stable.json" <<'PY'
import json, sys
doc = {"signed": {"channel": "stable", "version": 7, "expires": "2030-01-01T00:00:00Z",
       "release": {"product": "demo-os", "version": "2.0.0", "security_version": 1,
                   "bundle": "bundles/demo-os-2.0.0.tandem", "size": 16777216,
                   "manifest_sha256": "ab" * 32},
       "rollout": {"percent": 100, "salt": "8f0e" * 8}},
       "signatures": [{"keyid": "%064x" % i, "sig": "cd" * 64} for i in range(3)]}
open(sys.argv[1], "w").write(json.dumps(doc, indent=2))
PY
head -c $((16 * 1024 * 1024)) /dev/urandom > "$REPO/bundles/demo-os-2.0.0.tandem"

start_postgres() {
    local bin; bin=$(pg_bin)
    mkdir -p "$WORK/pg"
    [ ${#AS_PG[@]} -gt 0 ] && chown postgres "$WORK/pg"
    PG_DATA="$WORK/pg/data"
    "${AS_PG[@]}" "$bin/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 >/dev/null
    "${AS_PG[@]}" "$bin/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/log" -w \
        -o "-k $WORK/pg -c listen_addresses= -c max_connections=100" start >/dev/null
}

# count_rows BACKEND -> "rows distinct_ids"
count_rows() {
    local sql="SELECT COUNT(*), COUNT(DISTINCT node_id || '/' || report_id) FROM reports"
    if [ "$1" = sqlite ]; then
        python3 -c 'import sqlite3,sys; print(*sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone())' \
            "$WORK/data/tandem.db" "$sql"
    else
        "$(pg_bin)/psql" -At -F' ' -h "$WORK/pg" -U postgres -d postgres -c "$sql"
    fi
}

# count_leases BACKEND -> leases granted
count_leases() {
    local sql="SELECT COUNT(*) FROM lease_log WHERE event = 'acquired'"
    if [ "$1" = sqlite ]; then
        python3 -c 'import sqlite3,sys; print(*sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone())' \
            "$WORK/data/tandem.db" "$sql"
    else
        "$(pg_bin)/psql" -At -h "$WORK/pg" -U postgres -d postgres -c "$sql"
    fi
}

run_backend() {
    local backend=$1 store_args
    if [ "$backend" = sqlite ]; then
        store_args=(--data "$WORK/data")
    else
        start_postgres
        store_args=(--database "host=$WORK/pg user=postgres dbname=postgres")
    fi
    TANDEM_REPORT_TOKEN=$TOKEN "$SERVER" serve --repo "$REPO" --listen "127.0.0.1:$PORT" \
        --reboot-slots "$REBOOT_SLOTS" "${store_args[@]}" 2>"$WORK/server-$backend.log" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/channels/stable.json" 2>/dev/null && break
        sleep 0.1
    done
    "$FLEET" "http://127.0.0.1:$PORT" "$TOKEN" nodes="$NODES" interval="$INTERVAL" \
        speedup="$SPEEDUP" duration="$DURATION" retry_percent="$RETRY_PERCENT" ranges="$RANGES" \
        groups="$LEASE_GROUPS" \
        > "$WORK/fleet-$backend.txt"
    local rss status
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
    status=$(curl -fsS "http://127.0.0.1:$PORT/v1/channels/stable/status")
    {
        cat "$WORK/fleet-$backend.txt"
        echo "server_peak_rss_kib=$rss"
        read -r rows distinct < <(count_rows "$backend")
        echo "rows=$rows"
        echo "distinct_ids=$distinct"
        echo "leases_granted=$(count_leases "$backend")"
        python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print("status_nodes=%d" % s["nodes"]["total"]); print("status_committed=%d" % s["current_release"]["outcomes"]["committed"])' "$status"
    } > "$WORK/result-$backend.txt"
    stop_server
}

LOAD=$(cut -d" " -f1-3 /proc/loadavg)
for backend in $BACKENDS; do
    echo "running $backend: $NODES nodes, a poll every $INTERVAL s / $SPEEDUP, ${DURATION} s" >&2
    run_backend "$backend"
done

python3 - "$WORK" "$NODES" $BACKENDS <<'PY'
import sys
work, nodes, backends = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
fail = False
print(f"\n{'backend':9} {'polls/s':>8} {'poll p50':>9} {'poll p99':>9} {'reports/s':>10} "
      f"{'rep p50':>8} {'rep p99':>8} {'leases/s':>9} {'lease p50':>9} {'lease p99':>9} "
      f"{'range p99':>9} {'RSS MiB':>8} {'errors':>6}  exactly once")
for b in backends:
    r = dict(l.strip().split("=", 1) for l in open(f"{work}/result-{b}.txt") if "=" in l)
    sent, rows, ids = int(r["reports_unique"]), int(r["rows"]), int(r["distinct_ids"])
    once = rows == ids == sent and int(r["status_nodes"]) == int(r["status_committed"]) == nodes
    once = once and int(r["leases_granted"]) == nodes
    errors = sum(int(r[k]) for k in ("polls_errors", "reports_errors", "ranges_errors",
                                     "leases_errors"))
    fail |= not once or errors > 0
    print(f"{b:9} {r['polls_per_s']:>8} {r['polls_p50_ms']:>9} {r['polls_p99_ms']:>9} "
          f"{r['reports_per_s']:>10} {r['reports_p50_ms']:>8} {r['reports_p99_ms']:>8} "
          f"{r['leases_per_s']:>9} {r['leases_p50_ms']:>9} {r['leases_p99_ms']:>9} "
          f"{r['ranges_p99_ms']:>9} {int(r['server_peak_rss_kib']) / 1024:>8.0f} {errors:>6}  "
          f"{'yes' if once else 'NO'}: {sent} sent (+{r['reports_retried']} retried), "
          f"{rows} rows, {ids} distinct ids, {r['status_committed']}/{nodes} committed, "
          f"{r['leases_granted']}/{nodes} leases ({r['leases_busy']} busy answers)")
print(f"(latencies in ms; {r['polls']} polls, {r['polls_304']} answered 304, "
      f"poll period {r['poll_period_s']} s)")
sys.exit(1 if fail else 0)
PY
echo "(machine: $(nproc) cores, load before the run: $LOAD; load generator on the same host)"
