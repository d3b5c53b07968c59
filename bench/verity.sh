#!/usr/bin/env bash
# Benchmark (not a test): what a verity root costs. The signer benchmark's 1 GiB ext4 image
# signed without and with its dm-verity hash area (`tandem-signer verity`, `sign --verity`):
# the bundle bytes, and `tandem-updater install` of each into a slot of a disk image file
# (best of REPS, alternating, read-back on). The promise (docs/DESIGN.md §8): at most 5 % more of each.
#
#   bench/verity.sh          # REPS=3; work files in bench/work/ (gitignored)
set -euo pipefail

REPS=${REPS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/bench/work"
mkdir -p "$WORK"
. "$ROOT/bench/lib.sh"
IMG=$(os_image)
BIN=$(release_bins)

B="$WORK/verity"
rm -rf "$B" && mkdir -p "$B/state"
trust_root "$B"
"$BIN/tandem-signer" verity "$IMG" -o "$B/os.verity" --salt 00 >/dev/null
sign() {  # OUT [--verity FILE]
    local out=$1; shift
    "$BIN/tandem-signer" sign --image "$IMG" --product bench --version 1.0.0 --security-version 1 \
        --key "$B/release.pem" --level 3 -o "$out" "$@" >/dev/null 2>&1
}
sign "$B/plain.tandem"
sign "$B/verity.tandem" --verity "$B/os.verity"
"$BIN/tandem-disk" create "$B/disk.img" --size 2400MiB --slot-size 1100MiB >/dev/null
bench_config "$B"
install_once() {  # BUNDLE -> seconds
    local t0 t1
    rm -f "$B/state/state.json"
    t0=$(date +%s.%N)
    "$BIN/tandem-updater" --config "$B/updater.toml" install "$1" >/dev/null 2>"$B/install.log" \
        || { cat "$B/install.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }
# Plain and verity installs alternate, so a load that comes and goes weighs on both alike.
tp=999999 tv=999999
for ((i = 1; i <= REPS; i++)); do
    tp=$(min "$tp" "$(install_once "$B/plain.tandem")")
    tv=$(min "$tv" "$(install_once "$B/verity.tandem")")
done
plain=$(stat -c %s "$B/plain.tandem"); verity=$(stat -c %s "$B/verity.tandem")
awk -v p="$plain" -v v="$verity" 'BEGIN { printf "bundle: %d bytes plain, %d with verity (+%.2f %%)\n", p, v, (v / p - 1) * 100 }'
awk -v p="$tp" -v v="$tv" 'BEGIN { printf "install: %.3f s plain, %.3f s with verity (ratio %.3f)\n", p, v, v / p }'
