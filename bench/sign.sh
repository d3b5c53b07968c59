#!/usr/bin/env bash
# Benchmark (not a test): `tandem-signer sign --level 3` against `zstd -3 -T0` followed by
# `openssl dgst -sha256`, on the same 1 GiB OS-like image, in the same run.
#
#   bench/sign.sh            # REPS=3 SIZE_MIB=1024 FILL_MIB=700 by default
#
# The image is a real ext4 filesystem (mke2fs -t ext4 -d) filled to about 70 % with files copied
# from /usr/share and /usr/lib; the rest is zeros. Work files live in bench/work/ (gitignored)
# and are reused on the next run. Each contender runs REPS times, alternating, from the page
# cache; the best wall time of each is compared (CPU times are printed too: they show the
# work done whatever else the machine is running). Prints the time ratio (goal <= 1.0), both compressed
# sizes (goal: within 5 %) and tandem-signer's peak RSS.
set -euo pipefail

REPS=${REPS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
FILL_MIB=${FILL_MIB:-700}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/bench/work"
IMG="$WORK/os.img"
mkdir -p "$WORK"

for tool in zstd openssl mke2fs /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || { echo "sign.sh: $tool is missing (apt-get install zstd openssl e2fsprogs time)" >&2; exit 1; }
done

if [ ! -f "$IMG" ]; then
    echo "building a ${SIZE_MIB} MiB ext4 image with ~${FILL_MIB} MiB of system files" >&2
    rm -rf "$WORK/rootfs" && mkdir -p "$WORK/rootfs"
    find /usr/share /usr/lib -xdev -type f -size -64M -readable -printf '%s\t%p\n' 2>/dev/null | sort -k2 \
        | awk -F'\t' -v budget=$((FILL_MIB << 20)) '{ if (sum + $1 <= budget) { sum += $1; print $2 } }' \
        > "$WORK/files.txt"
    { tar -cf - -T "$WORK/files.txt" 2>/dev/null || true; } | tar -xf - -C "$WORK/rootfs"
    truncate -s "${SIZE_MIB}M" "$IMG.tmp"
    mke2fs -q -F -t ext4 -d "$WORK/rootfs" "$IMG.tmp"
    mv "$IMG.tmp" "$IMG"
    rm -rf "$WORK/rootfs"
fi

echo "building tandem-signer (release)" >&2
cargo build --release -q -p signer --bin tandem-signer --manifest-path "$ROOT/Cargo.toml"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SIGNER="$TARGET_DIR/release/tandem-signer"
[ -f "$WORK/bench.pem" ] || "$SIGNER" keygen --out "$WORK/bench" >/dev/null 2>&1

cat "$IMG" >/dev/null   # page cache, for both contenders
now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }
best_tandem=999999; best_zstd=999999; rss=0
for ((i = 1; i <= REPS; i++)); do
    t0=$(now)
    /usr/bin/time -f '%M %U %S' -o "$WORK/rss.txt" "$SIGNER" sign --image "$IMG" --product bench --version 1.0.0 \
        --security-version 1 --key "$WORK/bench.pem" --level 3 -o "$WORK/os.tandem" >/dev/null 2>&1
    t1=$(now)
    /usr/bin/time -f '%U %S' -o "$WORK/cpu-zstd.txt" zstd -3 -T0 -q -f "$IMG" -o "$WORK/os.img.zst"
    /usr/bin/time -f '%U %S' -o "$WORK/cpu-dgst.txt" openssl dgst -sha256 "$IMG" >/dev/null
    t2=$(now)
    cpu_t=$(awk '{ print $2 + $3 }' "$WORK/rss.txt")
    cpu_z=$(cat "$WORK/cpu-zstd.txt" "$WORK/cpu-dgst.txt" | awk '{ s += $1 + $2 } END { print s }')
    tt=$(calc "$t1 - $t0"); tz=$(calc "$t2 - $t1")
    printf 'run %d: tandem-signer %.3f s (cpu %.2f s), zstd+openssl %.3f s (cpu %.2f s)\n' "$i" "$tt" "$cpu_t" "$tz" "$cpu_z"
    best_tandem=$(calc "($tt < $best_tandem) ? $tt : $best_tandem")
    best_zstd=$(calc "($tz < $best_zstd) ? $tz : $best_zstd")
    r=$(cut -d' ' -f1 "$WORK/rss.txt"); [ "$r" -gt "$rss" ] && rss=$r
done

size_t=$(stat -c %s "$WORK/os.tandem"); size_z=$(stat -c %s "$WORK/os.img.zst")
echo "image:                 $(stat -c %s "$IMG") bytes ($(du -m "$IMG" | cut -f1) MiB allocated)"
printf 'best time:             tandem-signer %.3f s, zstd -3 -T0 + openssl dgst %.3f s\n' "$best_tandem" "$best_zstd"
printf 'time ratio:            %.3f (goal <= 1.0)\n' "$(calc "$best_tandem / $best_zstd")"
echo "compressed size:       tandem $size_t bytes, zstd $size_z bytes"
printf 'size ratio:            %.4f (goal <= 1.05)\n' "$(calc "$size_t / $size_z")"
echo "tandem-signer peak RSS: $((rss / 1024)) MiB"
