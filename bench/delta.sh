#!/usr/bin/env bash
# Benchmark (not a test): bytes on the wire of a delta update, Tandem against zsync and casync,
# all fetching v2 over HTTP from one nginx with v1 as the seed, in the same run.
#
#   bench/delta.sh   # DELTA_IMAGE_MIB=256 DELTA_SEED=12 DELTA_PORT=18490 DELTA_TIMEOUT=600 by default
#
# Image pairs v1 -> v2, built here deterministically from the seed (bench/delta-images.py):
#   runs       5 % of the 4 KiB blocks rewritten in 256 KiB runs, same offsets
#   scattered  5 % of single 4 KiB blocks rewritten, scattered
#   rebuild    3 % of the files patched, 24 MiB per GiB of image of new files (in three new
#              package directories), and the tree made into a fresh ext4 image with
#              `mke2fs -d` again: the first new file shifts the data of every file after it
#   throughout as rebuild, but every 4 KiB block of a patched file touched (a rebuilt package)
# v1 is one ext4 image (`mke2fs -d`, 4 KiB blocks) ~70 % full of generated system files: text,
# binaries and incompressible data of varied sizes; runs and scattered rewrite it in place.
# The file contents are the seed's alone; the order `mke2fs -d` lays files out in is the host
# filesystem's directory order, so the rebuild's images are the same on the same kind of host
# filesystem (ext4 here), not everywhere.
#
# Contenders, each fetching v2 from http://127.0.0.1:PORT with v1 as the seed:
#   zsync   `zsyncmake -b 4096` on the publisher, `zsync -i v1.img URL.zsync`
#   casync  `casync make` (default chunks, 64 KiB average) into a store served over HTTP,
#           `casync extract --seed=v1.img`
#   tandem  `tandem-signer sign --level 3 --previous v1.tandem` (4 KiB chunks; the chunks v1
#           holds share frames, the others get frames of their own) and `publish`; a node (a tandem-disk image) whose
#           booted slot holds v1, installed and committed by tandem-updater from v1's bundle,
#           runs `tandem-updater install URL --channel stable` (read-back on, as by default)
#   any     the same node, the release signed with no --previous (the signer knows nothing of
#           v1: frames of up to 1 MiB) and `--chunk-store`: the node fetches what it lacks as
#           the store's frames where they cost fewer bytes than the bundle's
# Besides, each Tandem release's repository bytes (bundle, and chunk store) against `zstd -3`.
# Bytes are everything nginx sent for a contender's requests ($bytes_sent: headers, metadata,
# index and payload); the updater's own count of payload bytes fetched and reused (its metrics
# textfile) is printed beside them, with its peak RSS. Times are wall times of the fetch alone.
# zsync's and casync's outputs are compared with v2 (cmp); Tandem verifies its slot itself. A fetch still
# running after DELTA_TIMEOUT seconds is stopped and shown as timed out, with the bytes it had
# fetched, and no ratio. (On the 1 GiB scattered case zsync was still matching after 11
# minutes: it crawled at about 80 kB/s through v1's zeroed free space, where v2 has scattered
# new blocks between identical zero blocks.)
#
# Also the size of `zstd -19 --long=30 --patch-from=v1.img` of v2 (a precomputed patch for the
# listed release, what update_engine and Mender ship; goal for the listed release on the
# rebuild: <= 1.0 of it), and the listed release's bytes against the new blocks plus its whole
# index (goal <= 1.05).
# Prints a table per case and the ratios tandem/zsync and tandem/casync (goal:
# <= 0.8 each), the bytes of the v2 blocks v1 holds nowhere (a floor: runs and scattered
# write random blocks, which no method can compress), and the v2 bundle against `zstd -3` of
# v2 (goal <= 1.05). Exits non-zero only
# when a tool fails, never on a ratio. Installs zsync, casync, nginx-light, e2fsprogs, zstd and
# curl with apt-get when missing. Work files in a temporary directory, removed at the end
# (DELTA_KEEP=1 keeps it and says where).
set -euo pipefail

MIB=${DELTA_IMAGE_MIB:-256}
SEED=${DELTA_SEED:-12}
PORT=${DELTA_PORT:-18490}
TIMEOUT=${DELTA_TIMEOUT:-600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GEN="$ROOT/bench/delta-images.py"

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
missing=0
for tool in zsync zsyncmake casync nginx mke2fs zstd curl python3 /usr/bin/time; do need "$tool" || missing=1; done
if [ "$missing" = 1 ]; then
    echo "installing zsync, casync, nginx-light, e2fsprogs, zstd, curl (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends zsync casync nginx-light e2fsprogs zstd curl python3 >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
MKE2FS=$(command -v mke2fs || echo /usr/sbin/mke2fs)

echo "building tandem-signer, tandem-disk, tandem-updater (release)" >&2
cargo build --release -q --manifest-path "$ROOT/Cargo.toml" --bin tandem-signer --bin tandem-disk --bin tandem-updater
BIN=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release

WORK=$(mktemp -d /tmp/tandem-delta.XXXXXX)
chmod 755 "$WORK"   # nginx workers may run as another user
NGINX_PID=""
cleanup() {
    if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
    if [ "${DELTA_KEEP:-0}" = 1 ]; then echo "work files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
WWW="$WORK/www"
mkdir -p "$WWW" "$WORK/nginx" "$WORK/images"

# run LOG CMD... : runs a tool, its output in LOG; on failure prints LOG and stops the bench.
run() {
    local log=$1; shift
    "$@" >"$log" 2>&1 || { echo "delta.sh: failed ($?): $*" >&2; tail -30 "$log" >&2; exit 1; }
}
now() { date +%s.%N; }

# --- images -------------------------------------------------------------------------------
# mkfs TREE IMAGE: a 4 KiB-block ext4 image of MIB MiB holding TREE (fixed UUID, hash seed and
# superblock times; inodes keep the files' fixed mtimes, only their ctimes differ between runs).
mkfs() {
    truncate -s "${MIB}M" "$2"
    run "$WORK/mkfs.log" env E2FSPROGS_FAKE_TIME=1700000000 "$MKE2FS" -q -F -t ext4 -T default -b 4096 -U 6a1f0c2e-0d2b-4c57-9a55-2b1d0f1e7d10 \
        -E hash_seed=0b7c7a0e-3f3a-4d4c-8e0e-6c0b5d1f2a33 -d "$1" "$2"
}
IMG="$WORK/images"
echo "building the images: ${MIB} MiB, seed $SEED" >&2
run "$WORK/gen.log" python3 "$GEN" tree "$IMG/tree1" $((MIB * 70 / 100 << 20)) "$SEED"
mkfs "$IMG/tree1" "$IMG/v1.img"
cp -a "$IMG/tree1" "$IMG/tree2"
run "$WORK/gen.log" python3 "$GEN" patch "$IMG/tree2" $((MIB * 24 / 1024 << 20)) $((SEED + 1))
mkdir -p "$IMG/rebuild" "$IMG/runs" "$IMG/scattered"
mkfs "$IMG/tree2" "$IMG/rebuild/v2.img"
rm -rf "$IMG/tree2"
cp -a "$IMG/tree1" "$IMG/tree3"
run "$WORK/gen.log" python3 "$GEN" throughout "$IMG/tree3" $((MIB * 24 / 1024 << 20)) $((SEED + 4))
mkdir -p "$IMG/throughout"
mkfs "$IMG/tree3" "$IMG/throughout/v2.img"
rm -rf "$IMG/tree3"
cp --sparse=always "$IMG/v1.img" "$IMG/runs/v2.img"
run "$WORK/gen.log" python3 "$GEN" rewrite "$IMG/runs/v2.img" runs $((SEED + 2))
cp --sparse=always "$IMG/v1.img" "$IMG/scattered/v2.img"
run "$WORK/gen.log" python3 "$GEN" rewrite "$IMG/scattered/v2.img" scattered $((SEED + 3))

# new_blocks CASE: how many of v2's non-zero 4 KiB blocks v1 holds nowhere, and their bytes: a
# floor for any delta method that does not compress them (runs and scattered write random,
# incompressible blocks).
new_blocks() {
    python3 - "$IMG/v1.img" "$IMG/$1/v2.img" <<'PY'
import hashlib, sys
def blocks(path):
    with open(path, "rb") as f:
        while block := f.read(4096):
            yield block
old = {hashlib.sha256(b).digest() for b in blocks(sys.argv[1])}
new = [b for b in blocks(sys.argv[2]) if any(b) and hashlib.sha256(b).digest() not in old]
print(len(new), sum(map(len, new)))
PY
}

# --- nginx --------------------------------------------------------------------------------
LOG="$WORK/nginx/access.log"
cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    log_format wire '\$request_uri \$status \$bytes_sent \$body_bytes_sent';
    access_log $LOG wire;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    types { application/json json; application/octet-stream tandem; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$PORT;
        root $WWW;
    }
}
NGX
"$NGINX" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
NGINX_PID=$!
URL="http://127.0.0.1:$PORT"
echo up > "$WWW/up"
chmod -R a+rX "$WWW"
for _ in $(seq 1 100); do curl -fsS -o /dev/null "$URL/up" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "$URL/up" || { echo "nginx did not come up on port $PORT" >&2; cat "$WORK/nginx/error.log" >&2; exit 1; }

# wire PREFIX -> "bytes_sent body_bytes requests" over the requests whose URI starts with PREFIX
wire() {
    awk -v p="$1" 'index($1, p) == 1 { b += $3; body += $4; n++ } END { printf "%d %d %d\n", b, body, n }' "$LOG"
}

# --- Tandem: keys, v1's bundle, a node running v1 -----------------------------------------
T="$WORK/tandem"
mkdir -p "$T"
run "$T/keys.log" "$BIN/tandem-signer" keygen --out "$T/root"
run "$T/keys.log" "$BIN/tandem-signer" keygen --out "$T/release"
run "$T/keys.log" "$BIN/tandem-signer" root init -o "$T/root.json" --root-key "$T/root.pub.pem" --root-threshold 1 \
    --release-key "$T/release.pub.pem" --release-threshold 1 --expires 30d --sign-with "$T/root.pem"
sign() {  # IMAGE VERSION OUT [--previous BUNDLE]
    run "$T/sign.log" "$BIN/tandem-signer" sign --image "$1" --product bench --version "$2" --security-version 1 \
        --key "$T/release.pem" --level 3 -o "$3" "${@:4}"
}
node_config() {  # DIR BOOTED_SLOT
    cat > "$1/updater.toml" <<TOML
disk = "$1/disk.img"
boot = "gpt"
state = "$1/state/state.json"
root = "$T/root.json"
product = "bench"
node_id = "bench-node"
booted_slot = "$2"
reboot = ["true"]
metrics_textfile = "$1/metrics/tandem.prom"
TOML
}
echo "signing v1; a node installs and commits it" >&2
sign "$IMG/v1.img" 1.0.0 "$T/v1.tandem"
NODE="$T/node-v1"
mkdir -p "$NODE/state" "$NODE/metrics"
run "$NODE/create.log" "$BIN/tandem-disk" create "$NODE/disk.img" --size "$((MIB * 2 + 232))MiB" --slot-size "$((MIB + 16))MiB"
node_config "$NODE" a
run "$NODE/install.log" "$BIN/tandem-updater" --config "$NODE/updater.toml" install "$T/v1.tandem"
booted=$("$BIN/tandem-disk" boot "$NODE/disk.img")
node_config "$NODE" "$booted"
run "$NODE/boot-check.log" "$BIN/tandem-updater" --config "$NODE/updater.toml" boot-check

# --- the cases ----------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
# measure CASE TOOL LOG CMD...: runs a fetch under DELTA_TIMEOUT; sets BYTES and REQUESTS (what
# nginx sent for /CASE/TOOL/), TOOK (wall seconds) and STATUS (ok, or timeout). Any other
# failure stops the bench.
measure() {
    local c=$1 tool=$2 log=$3 t0 t1 rc=0; shift 3
    t0=$(now)
    timeout -k 10 "$TIMEOUT" "$@" >"$log" 2>&1 || rc=$?
    t1=$(now)
    case $rc in
        0) STATUS=ok ;;
        124 | 137) STATUS=timeout; echo "delta.sh: $tool ran out of time (${TIMEOUT}s) in case $c" >&2 ;;
        *) echo "delta.sh: failed ($rc): $*" >&2; tail -30 "$log" >&2; exit 1 ;;
    esac
    read -r BYTES _ REQUESTS < <(wire "/$c/$tool/")
    TOOK=$(awk "BEGIN { print $t1 - $t0 }")
}
# record CASE TOOL EXTRA: a row of the results from the last measure.
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$BYTES" "$REQUESTS" "$TOOK" "$STATUS" "$3" >> "$RESULTS"; }

bench_zsync() {  # CASE
    local c=$1 d="$WWW/$1/zsync" out="$WORK/out/$1-zsync"
    mkdir -p "$d" "$out"
    ln "$IMG/$c/v2.img" "$d/v2.img"
    run "$out/make.log" zsyncmake -b 4096 -u v2.img -o "$d/v2.img.zsync" "$d/v2.img"
    chmod -R a+rX "$WWW"
    measure "$c" zsync "$out/zsync.log" env -C "$out" zsync -q -i "$IMG/v1.img" -o "$out/v2.img" \
        "$URL/$c/zsync/v2.img.zsync"
    [ "$STATUS" != ok ] || run "$out/cmp.log" cmp "$out/v2.img" "$IMG/$c/v2.img"
    record "$c" zsync "$(stat -c %s "$d/v2.img.zsync")"
    rm -rf "$out" "$d/v2.img"
}

bench_casync() {  # CASE
    local c=$1 d="$WWW/$1/casync" out="$WORK/out/$1-casync"
    mkdir -p "$d" "$out"
    run "$out/make.log" casync make --store="$d/v2.castr" "$d/v2.caibx" "$IMG/$c/v2.img"
    chmod -R a+rX "$WWW"
    measure "$c" casync "$out/extract.log" casync extract --store="$URL/$c/casync/v2.castr" \
        --seed="$IMG/v1.img" "$URL/$c/casync/v2.caibx" "$out/v2.img"
    [ "$STATUS" != ok ] || run "$out/cmp.log" cmp "$out/v2.img" "$IMG/$c/v2.img"
    record "$c" casync "$(stat -c %s "$d/v2.caibx")"
    rm -rf "$out" "$d"
}

# The updater's own view of the install: payload bytes fetched and reused (metrics textfile).
metric() { awk -v m="tandem_updater_last_install_$1" '$1 == m { printf "%d", $2 }' "$2"; }

bench_tandem() {  # CASE TOOL (tandem: --previous v1; any: no --previous, a chunk store)
    local c=$1 tool=$2 repo="$WWW/$1/$2" node="$WORK/out/$1-$2" bundle zst store=0 fetched=0 reused=0 rss=0
    mkdir -p "$node"
    if [ "$tool" = tandem ]; then
        sign "$IMG/$c/v2.img" 2.0.0 "$WORK/$c-v2.tandem" --previous "$T/v1.tandem"
    else
        sign "$IMG/$c/v2.img" 2.0.0 "$WORK/$c-v2.tandem" --chunk-store
        store=$(stat -c %s "$WORK/$c-v2.tandem.chunks")
    fi
    run "$node/publish.log" "$BIN/tandem-signer" publish --repo "$repo" --channel stable --key "$T/release.pem" \
        --root "$T/root.json" "$WORK/$c-v2.tandem"
    chmod -R a+rX "$WWW"
    cp -a --sparse=always "$NODE/." "$node/"
    node_config "$node" "$booted"
    measure "$c" "$tool" "$node/install.log" /usr/bin/time -f '%M' -o "$node/rss.txt" \
        "$BIN/tandem-updater" --config "$node/updater.toml" install "$URL/$c/$tool/" --channel stable
    if [ "$STATUS" = ok ]; then
        fetched=$(metric bytes_fetched "$node/metrics/tandem.prom")
        reused=$(metric bytes_reused "$node/metrics/tandem.prom")
        rss=$(tail -1 "$node/rss.txt")
    fi
    bundle=$(stat -c %s "$WORK/$c-v2.tandem")
    zst=$(zstd -3 -T0 -q -c "$IMG/$c/v2.img" | wc -c)
    index=$(python3 -c 'import struct, sys; print(struct.unpack_from("<I", open(sys.argv[1], "rb").read(24), 20)[0])' "$WORK/$c-v2.tandem")
    record "$c" "$tool" "$fetched $reused $bundle $zst $rss $store $index"
    rm -rf "$node" "$repo" "$WORK/$c-v2.tandem" "$WORK/$c-v2.tandem.chunks"
}

for c in ${DELTA_CASES:-runs scattered rebuild throughout}; do
    echo "case $c: zsync, casync, tandem (v1 listed), tandem (any release, chunk store)" >&2
    printf '%s\tfloor\t%s\n' "$c" "$(new_blocks "$c")" >> "$RESULTS"
    printf '%s\tpatch\t%s\n' "$c" "$(zstd -q -19 --long=30 --patch-from="$IMG/v1.img" -c "$IMG/$c/v2.img" | wc -c)" >> "$RESULTS"
    bench_zsync "$c"
    bench_casync "$c"
    bench_tandem "$c" tandem
    bench_tandem "$c" any
done

LOAD=$(cut -d" " -f1-3 /proc/loadavg)
python3 - "$RESULTS" "$MIB" "$TIMEOUT" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
mib, timeout = int(sys.argv[2]), sys.argv[3]
titles = {
    "runs": "5 % of 4 KiB blocks rewritten in 256 KiB runs, same offsets",
    "scattered": "5 % of single 4 KiB blocks rewritten, scattered",
    "rebuild": f"3 % of files patched, {mib * 24 // 1024} MiB of new files, mke2fs -d again",
    "throughout": f"3 % of files patched in every 4 KiB block, {mib * 24 // 1024} MiB of new"
                  " files, mke2fs -d again",
}
TOOLS = ("zsync", "casync", "tandem", "any")


def note(tool, wire, status, extra):
    if status != "ok":
        return f"TIMED OUT after {timeout} s: the bytes so far"
    if tool == "zsync":
        return f"of which the .zsync file {int(extra) / 1e6:.2f} MB"
    if tool == "casync":
        return f"of which the .caibx index {int(extra) / 1e6:.2f} MB"
    fetched, reused = (int(x) for x in extra.split()[:2])
    rss = int(extra.split()[4])
    return (f"updater: {fetched / 1e6:.2f} MB of chunks fetched, {reused / 1e6:.2f} MB reused"
            f" from the active slot; the rest {(wire - fetched) / 1e6:.2f} MB; peak RSS"
            f" {rss // 1024} MiB (goal <= 32)")


def ratio(r, a, b):
    if r[a][5] != "ok" or r[b][5] != "ok":
        return "n/a (timed out)"
    return f"{int(r[a][2]) / int(r[b][2]):.2f}"


for case, title in titles.items():
    r = {row[1]: row for row in rows if row[0] == case}
    floor = r.pop("floor", None)
    patch = r.pop("patch", None)
    if set(r) != set(TOOLS):
        continue
    print(f"\n{case}: {title} ({mib} MiB images)")
    print(f"  {'tool':7} {'bytes on the wire':>25} {'requests':>9} {'time':>9}")
    for tool in TOOLS:
        _, _, wire, n, secs, status, extra = r[tool]
        wire = int(wire)
        print(f"  {tool:7} {wire:>12} = {wire / 1e6:8.2f} MB {n:>9} {float(secs):8.2f}s  "
              f"{note(tool, wire, status, extra)}")
    print(f"  v1 listed (--previous): tandem/zsync {ratio(r, 'tandem', 'zsync')},"
          f" tandem/casync {ratio(r, 'tandem', 'casync')} (goal: <= 0.8 each)")
    print(f"  any release (chunk store): tandem/zsync {ratio(r, 'any', 'zsync')},"
          f" tandem/casync {ratio(r, 'any', 'casync')} (goal: <= 1.0 against zsync)")
    if floor:
        count, size = (int(x) for x in floor[2].split())
        best = min(int(r[t][2]) for t in ("zsync", "casync") if r[t][5] == "ok")
        print(f"  v2 has {count} non-zero 4 KiB blocks v1 holds nowhere: {size / 1e6:.2f} MB,"
              f" {size / best:.2f} of the best of zsync and casync (the bytes any method must"
              " move, uncompressed)")
    if floor and r["tandem"][5] == "ok":
        index = int(r["tandem"][6].split()[6])
        wire = int(r["tandem"][2])
        print(f"  v1 listed: {wire / 1e6:.2f} MB against the new blocks and the whole index"
              f" ({(size + index) / 1e6:.2f} MB): {wire / (size + index):.2f} (goal <= 1.05)")
    if patch and r["tandem"][5] == "ok":
        patched = int(patch[2])
        print(f"  zstd -19 --long=30 --patch-from=v1: {patched / 1e6:.2f} MB; v1 listed"
              f" {int(r['tandem'][2]) / patched:.2f} of it, any release"
              f" {int(r['any'][2]) / patched:.2f} (goal on the rebuild: <= 1.0)")
    for tool, how in (("tandem", "--previous v1"), ("any", "--chunk-store")):
        bundle, zst, _, store = (int(x) for x in r[tool][6].split()[2:6])
        print(f"  {how}: v2 bundle {bundle} bytes, zstd -3 of v2 {zst} bytes: {bundle / zst:.3f}"
              f" (goal <= 1.05); chunk store {store} bytes; repository per release"
              f" {(bundle + store) / zst:.3f} of zstd -3 (goal <= 2.2)")
PY
echo "(machine: $(nproc) cores, load before the summary: $LOAD; one nginx on 127.0.0.1, MB = 10^6 bytes)"
