#!/usr/bin/env bash
# Benchmark (not a test): `tandem-updater install` of a local bundle into a slot of a disk
# image file, against `zstd -dc image.zst | dd … oflag=direct conv=fsync,notrunc` writing
# the same image over a file in place, in the same run; plus the peak RSS of the agent
# installing, and of the signer signing, a 1 GiB, a 4 GiB and a 16 GiB image (the last mostly
# zeros: two copies of the 1 GiB image at 0 and 12 GiB in a sparse file, cheap to build).
#
#   bench/install.sh         # REPS=3 by default; work files in bench/work/ (gitignored)
#
# The image is the signer benchmark's: a real ext4 filesystem ~70 % full of system files.
# Prints: time ratio without read-back (goal <= 1.0), with read-back (goal <= 1.5), peak RSS
# (goal: agent <= 32 MiB, signer <= 64 MiB, at every size).
set -euo pipefail

REPS=${REPS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/bench/work"
mkdir -p "$WORK"
for tool in zstd dd mke2fs /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install.sh: $tool is missing (apt-get install zstd e2fsprogs time)" >&2; exit 1; }
done

. "$ROOT/bench/lib.sh"
IMG=$(os_image)
BIN=$(release_bins)

B="$WORK/install"
rm -rf "$B" && mkdir -p "$B"
trust_root "$B"

# sign IMAGE VERSION -> $B/<version>.tandem; the signer's RSS (KiB) in $B/sign-rss.txt
sign() {
    /usr/bin/time -f '%M' -o "$B/sign-rss.txt" \
        "$BIN/tandem-signer" sign --image "$1" --product bench --version "$2" --security-version 1 \
        --key "$B/release.pem" --level 3 -o "$B/$2.tandem" >/dev/null 2>&1
}

# install_once BUNDLE SIZE_MIB READBACK -> prints seconds; RSS (KiB) in $B/rss.txt
install_once() {
    local bundle=$1 slot_mib=$2 readback=$3
    rm -f "$B/state/state.json" "$B/state/root.json"
    mkdir -p "$B/state"
    bench_config "$B" "verify_readback = $readback"
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$B/rss.txt" "$BIN/tandem-updater" --config "$B/updater.toml" install "$bundle" >/dev/null 2>"$B/install.log" \
        || { cat "$B/install.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk "BEGIN { print $t1 - $t0 }"
}

make_disk() {  # SLOT_MIB
    rm -f "$B/disk.img"
    "$BIN/tandem-disk" create "$B/disk.img" --size "$(( $1 * 2 + 200 ))MiB" --slot-size "${1}MiB" >/dev/null
}

echo "signing the 1 GiB image" >&2
sign "$IMG" 1.0.0
sign_rss_1g=$(cat "$B/sign-rss.txt")
zstd -3 -T0 -q -f "$IMG" -o "$B/os.img.zst"
make_disk 1100
truncate -s 1100M "$B/slot.img"
cat "$B/1.0.0.tandem" "$B/os.img.zst" >/dev/null   # both sources in the page cache

best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }
best_dd=999999; best_fast=999999; best_checked=999999
for ((i = 1; i <= REPS; i++)); do
    t0=$(date +%s.%N)
    zstd -dc "$B/os.img.zst" | dd of="$B/slot.img" bs=4M iflag=fullblock oflag=direct conv=fsync,notrunc status=none
    t1=$(date +%s.%N)
    td=$(awk "BEGIN { print $t1 - $t0 }")
    tf=$(install_once "$B/1.0.0.tandem" 1100 false)
    tc=$(install_once "$B/1.0.0.tandem" 1100 true)
    printf 'run %d: zstd|dd %.3f s, tandem-updater %.3f s, with read-back %.3f s\n' "$i" "$td" "$tf" "$tc"
    best_dd=$(best "$td" "$best_dd"); best_fast=$(best "$tf" "$best_fast"); best_checked=$(best "$tc" "$best_checked")
done
rss_1g=$(cat "$B/rss.txt")

echo "building and signing a 4 GiB image for the memory check" >&2
if [ ! -f "$WORK/os4g.img" ]; then
    cp --sparse=always "$IMG" "$WORK/os4g.img.tmp"
    truncate -s 4G "$WORK/os4g.img.tmp"
    # Fill the added space with data so the pipeline really carries 4 GiB, not holes.
    dd if="$IMG" of="$WORK/os4g.img.tmp" bs=4M seek=256 conv=notrunc status=none
    dd if="$IMG" of="$WORK/os4g.img.tmp" bs=4M seek=512 conv=notrunc status=none
    mv "$WORK/os4g.img.tmp" "$WORK/os4g.img"
fi
sign "$WORK/os4g.img" 4.0.0
sign_rss_4g=$(cat "$B/sign-rss.txt")
rm -f "$B/slot.img"
make_disk 4200
install_once "$B/4.0.0.tandem" 4200 true >/dev/null
rss_4g=$(cat "$B/rss.txt")
rm -f "$B/disk.img" "$B/4.0.0.tandem"

echo "building and signing a 16 GiB mostly-zero image for the memory check" >&2
if [ ! -f "$WORK/os16g.img" ]; then
    truncate -s 16G "$WORK/os16g.img.tmp"
    dd if="$IMG" of="$WORK/os16g.img.tmp" bs=4M conv=notrunc,sparse status=none
    dd if="$IMG" of="$WORK/os16g.img.tmp" bs=4M seek=3072 conv=notrunc,sparse status=none
    mv "$WORK/os16g.img.tmp" "$WORK/os16g.img"
fi
sign "$WORK/os16g.img" 16.0.0
sign_rss_16g=$(cat "$B/sign-rss.txt")
make_disk 16400
t16=$(install_once "$B/16.0.0.tandem" 16400 true)
rss_16g=$(cat "$B/rss.txt")
rm -f "$B/disk.img" "$B/16.0.0.tandem"

printf 'best time:        zstd -dc | dd %.3f s; tandem-updater %.3f s; with read-back %.3f s\n' "$best_dd" "$best_fast" "$best_checked"
printf 'ratio:            %.3f without read-back (goal <= 1.0), %.3f with read-back (goal <= 1.5)\n' \
    "$(awk "BEGIN { print $best_fast / $best_dd }")" "$(awk "BEGIN { print $best_checked / $best_dd }")"
echo "peak RSS, agent:  $((rss_1g / 1024)) MiB (1 GiB image), $((rss_4g / 1024)) MiB (4 GiB), $((rss_16g / 1024)) MiB (16 GiB, installed with read-back in ${t16} s) (goal <= 32 MiB)"
echo "peak RSS, signer: $((sign_rss_1g / 1024)) MiB (1 GiB image), $((sign_rss_4g / 1024)) MiB (4 GiB), $((sign_rss_16g / 1024)) MiB (16 GiB) (goal <= 64 MiB)"
