#!/usr/bin/env bash
# Benchmark (not a test): the agent's peak RSS on a delta install over HTTP, at image sizes where
# every 4 KiB block is distinct, so the seed (the chunks the node holds, updater/src/seed.rs) has
# one entry per block of the image.
#
#   bench/delta-rss.sh   # DELTA_RSS_SIZES="1024 4096 16384" (MiB) by default
#   DELTA_RSS_BASELINE=/path/to/an/older/tandem-updater bench/delta-rss.sh   # measure both
#
# Images, built here: v1's block i is a 16-byte stamp (1, i) then a fixed 4080-byte pattern, so
# the blocks are all distinct yet compress well (the bundles stay small and quick to sign);
# v2 is v1 moved one block on (every chunk v1 holds is found at another offset), with 1 % of
# its blocks new, in 1 MiB runs every 100 MiB. At most DELTA_RSS_DATA_MIB (4096) MiB of an image
# is data, the rest zeros: the 16 GiB case is mostly zeros (4 GiB of distinct blocks), which
# keeps it within a work disk; the seed's size follows the distinct non-zero chunks.
#
# The node: a tandem-disk image whose slot a holds v1, written as at the factory
# (`tandem-disk write-slot`); v2 is signed (no --previous: 1 MiB frames), published, served by
# tandem-server on 127.0.0.1, and installed with `tandem-updater install URL --channel stable`
# (read-back on, as by default), the node made anew for each agent measured. Prints per size
# and agent the peak RSS (goal <= 32 MiB), the wall time and the bytes reused from the active
# slot; then, per size, the signer's peak RSS signing v2 with v1 listed (`--previous`: the
# listed release's chunks are held as 8-byte keys; goal <= 64 MiB). Work files in bench/work/delta-rss (gitignored), removed at the end.
set -euo pipefail

SIZES=${DELTA_RSS_SIZES:-1024 4096 16384}
DATA_MIB=${DELTA_RSS_DATA_MIB:-4096}
PORT=${DELTA_RSS_PORT:-18491}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/bench/work"
mkdir -p "$WORK"
for tool in /usr/bin/time curl python3; do
    command -v "$tool" >/dev/null || { echo "delta-rss.sh: $tool is missing (apt-get install time curl python3)" >&2; exit 1; }
done

. "$ROOT/bench/lib.sh"
BIN=$(release_bins)
cargo build --release -q --manifest-path "$ROOT/Cargo.toml" --bin tandem-server
AGENTS=("$BIN/tandem-updater")
[ -z "${DELTA_RSS_BASELINE:-}" ] || AGENTS=("$DELTA_RSS_BASELINE" "${AGENTS[@]}")

B="$WORK/delta-rss"
rm -rf "$B" && mkdir -p "$B"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$B"
}
trap cleanup EXIT
trust_root "$B"

# image OUT MIB VERSION: the stamped image (v1 or v2, above).
image() {
    python3 - "$1" "$2" "$DATA_MIB" "$3" <<'PY'
import struct, sys
out, mib, data_mib, version = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pattern = (bytes(range(256)) * 16)[:4080]
def block(tag, n):
    return struct.pack("<QQ", tag, n) + pattern
def v2(i):
    new = i == 0 or (i // 256) % 100 == 1
    return block(2, i) if new else block(1, i - 1)
stamp = (lambda i: block(1, i)) if version == 1 else v2
with open(out, "wb") as f:
    f.truncate(mib << 20)
    blocks = min(mib, data_mib) * 256
    for start in range(0, blocks, 256):
        f.write(b"".join(stamp(i) for i in range(start, min(start + 256, blocks))))
PY
}

# serve: tandem-server on the repository, once it exists.
serve() {
    [ -z "$SERVER_PID" ] || return 0
    mkdir -p "$B/server"
    "$BIN/tandem-server" serve --repo "$B/www" --listen "127.0.0.1:$PORT" --data "$B/server" >"$B/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/root.json" 2>/dev/null && return 0; sleep 0.1; done
    echo "delta-rss.sh: tandem-server did not come up on port $PORT" >&2; cat "$B/server.log" >&2; exit 1
}

RESULTS=()
SIGNER=()
for mib in $SIZES; do
    echo "building and signing the ${mib} MiB images" >&2
    image "$B/v2.img" "$mib" 2
    "$BIN/tandem-signer" sign --image "$B/v2.img" --product bench --version "2.0.$mib" --security-version 1 \
        --key "$B/release.pem" --level 3 -o "$B/v2.tandem" >/dev/null 2>"$B/sign.log" || { cat "$B/sign.log" >&2; exit 1; }
    rm -f "$B/v2.img"
    "$BIN/tandem-signer" publish --repo "$B/www" --channel stable --key "$B/release.pem" --root "$B/root.json" \
        "$B/v2.tandem" >/dev/null
    serve
    image "$B/v1.img" "$mib" 1
    for agent in "${AGENTS[@]}"; do
        rm -rf "$B/state" "$B/metrics" "$B/disk.img"
        mkdir -p "$B/state" "$B/metrics"
        "$BIN/tandem-disk" create "$B/disk.img" --size "$((mib * 2 + 232))MiB" --slot-size "$((mib + 16))MiB" >/dev/null
        "$BIN/tandem-disk" write-slot "$B/disk.img" a "$B/v1.img" >/dev/null
        bench_config "$B" 'node_id = "bench-node"' "metrics_textfile = \"$B/metrics/tandem.prom\""
        sync
        t0=$(date +%s.%N)
        /usr/bin/time -f '%M' -o "$B/rss.txt" "$agent" --config "$B/updater.toml" \
            install "http://127.0.0.1:$PORT/" --channel stable >/dev/null 2>"$B/install.log" \
            || { cat "$B/install.log" >&2; exit 1; }
        t1=$(date +%s.%N)
        reused=$(awk '$1 == "tandem_updater_last_install_bytes_reused" { printf "%.0f", $2 }' "$B/metrics/tandem.prom")
        RESULTS+=("$(printf '%6d MiB image: peak RSS %3d MiB, %6.1f s, %6d MiB reused from the active slot  (%s)' \
            "$mib" "$(( $(tail -1 "$B/rss.txt") / 1024 ))" "$(awk "BEGIN { print $t1 - $t0 }")" \
            "$(( reused >> 20 ))" "$agent")")
        echo "${RESULTS[-1]}" >&2
    done
    # The signer's peak RSS signing v2 with v1 listed (--previous): v1 signed, then v2 again.
    "$BIN/tandem-signer" sign --image "$B/v1.img" --product bench --version "1.0.$mib" --security-version 1 \
        --key "$B/release.pem" --level 3 -o "$B/v1.tandem" >/dev/null 2>"$B/sign.log" || { cat "$B/sign.log" >&2; exit 1; }
    rm -f "$B/v1.img"
    image "$B/v2.img" "$mib" 2
    /usr/bin/time -f '%M' -o "$B/sign-rss.txt" "$BIN/tandem-signer" sign --image "$B/v2.img" --product bench \
        --version "2.0.$mib" --security-version 1 --key "$B/release.pem" --level 3 -o "$B/v2p.tandem" \
        --previous "$B/v1.tandem" >/dev/null 2>"$B/sign.log" || { cat "$B/sign.log" >&2; exit 1; }
    SIGNER+=("$(printf '%6d MiB image: signer with --previous, peak RSS %3d MiB' "$mib" "$(( $(tail -1 "$B/sign-rss.txt") / 1024 ))")")
    echo "${SIGNER[-1]}" >&2
    rm -f "$B/v1.img" "$B/v2.img" "$B/v1.tandem" "$B/v2p.tandem" "$B/v2.tandem" "$B/disk.img"
done

echo "agent's peak RSS on a delta install over HTTP (goal <= 32 MiB at every size; data capped at $DATA_MIB MiB):"
printf '%s\n' "${RESULTS[@]}"
echo "the signer's peak RSS signing v2 with v1 listed (goal <= 64 MiB):"
printf '%s\n' "${SIGNER[@]}"
echo "(machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
