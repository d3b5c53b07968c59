#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/seeds/<target>/ from the real tools: a tiny bundle
# (and the manifest of one with a dm-verity root),
# root and channel made by tandem-signer (fresh random keys: only the shapes matter), its
# header/manifest/signature-block regions, a tiny GPT, grubenv blocks, and a few
# Range headers, reports and pause hints. Usage: fuzz/make-seeds.sh (from anywhere); needs
# python3 and the zstd command.
set -euo pipefail
FUZZ=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$FUZZ")
SEEDS=$FUZZ/seeds
cargo build -q --manifest-path "$ROOT/Cargo.toml" -p signer --bin tandem-signer
SIGNER=$ROOT/target/debug/tandem-signer
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
for t in bundle_head manifest signature_block root channel grubenv gpt range report pause route fleetlock index_stream index_tree node_auth; do
    mkdir -p "$SEEDS/$t"
done

# Signer documents: one root (1 root key, 2 release keys, threshold 2), one bundle of a
# 20 KiB image in 4 KiB chunks (data, zeros, a short last chunk; format version 3, the
# chunks listed in its index), one channel. The version 1 seeds (os-v1.*) were made by an
# earlier signer and are kept: version 1 stays readable.
for k in root r1 r2; do "$SIGNER" keygen --out $k >/dev/null; done
"$SIGNER" root init -o root.json --root-key root.pub.pem --root-threshold 1 \
    --release-key r1.pub.pem --release-key r2.pub.pem --release-threshold 2 \
    --expires 3650d --sign-with root.pem >/dev/null
{ printf 'NAME=seed\n'; head -c 6000 /dev/urandom; head -c 8192 /dev/zero; printf 'end'; } >os.img
"$SIGNER" sign --image os.img --product acme-edge --version 1.2.3 --security-version 1 \
    --chunk-size 4KiB --key r1.pem --key r2.pem -o os.tandem >/dev/null
"$SIGNER" publish --repo repo --channel stable --key r1.pem --key r2.pem --root root.json \
    --expires 3650d os.tandem >/dev/null
cp root.json "$SEEDS/root/root.json"
cp repo/channels/stable.json "$SEEDS/channel/stable.json"
cp os.tandem "$SEEDS/bundle_head/os.tandem"
# A release with a dm-verity root (FORMAT §3.3): 16 KiB of data, its hash area appended.
{ printf 'NAME=verity\n'; head -c 16372 /dev/urandom; } >root.img
"$SIGNER" verity root.img -o root.verity --salt 5eed >/dev/null
"$SIGNER" sign --image root.img --verity root.verity --product acme-edge --version 1.2.4 \
    --security-version 1 --chunk-size 4KiB --key r1.pem -o root.tandem >/dev/null
# A release with a chunk store (FORMAT §3.4): 44-byte index records.
"$SIGNER" sign --image os.img --product acme-edge --version 1.2.5 --security-version 1 \
    --chunk-size 4KiB --chunk-store --key r1.pem -o store.tandem >/dev/null

# The manifest target's seed of bundle $1, in $2: the stored index (the file's last
# index_len bytes, header bytes 20..24), a tree index (FORMAT §3.2.1) as the signer writes
# it, turned into the one-frame records of §3.2 and appended to the manifest (its `tree`
# member dropped); with $3, the signature block too. The index_tree target's seed keeps the
# tree: the lengths records raw, then the column of hashes.
manifest_seed() {
python3 - "$1" "$SEEDS" "$2" "${3:-}" <<'PY'
import hashlib, json, struct, subprocess, sys
data = open(sys.argv[1], "rb").read()
assert data[7] == 3, "the signer writes format version 3"
m, s, d, n = struct.unpack_from("<IIII", data, 8)
region = data[24:24 + m]
doc = json.loads(region.rstrip(b" "))
tree = doc["index"].pop("tree")
index = data[len(data) - n:]
unzstd = lambda b: subprocess.run(["zstd", "-dq", "-c"], input=b, capture_output=True, check=True).stdout
lengths = unzstd(index[:tree["lengths"]])
column = index[tree["lengths"] + tree["table"]:]
rlen = 12 if "store" in doc else 8
records, at = b"", 0
for i in range(0, len(lengths), rlen):
    r = lengths[i:i + rlen]
    raw_len, frame_len = struct.unpack_from("<II", r)
    if frame_len:
        sha, at = column[at:at + 32], at + 32
    else:
        sha = hashlib.sha256(bytes(raw_len)).digest()
    records += sha + r
plain = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
seeds, name = sys.argv[2], sys.argv[3]
# The manifest target reads a version flag byte first (its value modulo 3: 0 for version 1,
# 1 for 2, 2 for 3); for version 3 then the manifest length and, after the manifest, the
# index records raw.
open(seeds + "/manifest/" + name, "wb").write(b"\2" + struct.pack("<I", len(plain)) + plain + records)
# The index_stream target reads the version 3 form without the flag byte.
open(seeds + "/index_stream/" + name.replace(".manifest", ".index"), "wb").write(struct.pack("<I", len(plain)) + plain + records)
open(seeds + "/index_tree/" + name.replace(".manifest", ".tree"), "wb").write(
    struct.pack("<I", m) + region + struct.pack("<I", len(lengths)) + lengths + b"\0" + column)
if sys.argv[4]:
    open(seeds + "/signature_block/" + sys.argv[4], "wb").write(data[24 + m:24 + m + s])
PY
}
manifest_seed os.tandem os.manifest os.sigblock
manifest_seed root.tandem os-verity.manifest
manifest_seed store.tandem os-store.manifest

# GPT: a 24 KiB disk (48 sectors), 4-entry arrays (one sector each), root-a and root-b,
# written here because sgdisk refuses disks this small; the leading byte 1 asks the target
# to recompute CRCs after mutating.
python3 - "$SEEDS/gpt/two-slots.disk" <<'PY'
import struct, sys, uuid, zlib
SECTORS, ENTRIES = 48, 4
def entry(name, first, last, attrs):
    return (uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709").bytes_le + uuid.uuid4().bytes_le
            + struct.pack("<QQQ", first, last, attrs) + name.encode("utf-16-le").ljust(72, b"\0"))
array = (entry("root-a", 4, 20, 0x0103 << 48) + entry("root-b", 21, 37, 0)).ljust(ENTRIES * 128, b"\0")
disk_guid = uuid.uuid4().bytes_le
def header(my, alt, entries_lba):
    h = struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, my, alt, 3,
                    SECTORS - 3, disk_guid, entries_lba, ENTRIES, 128, zlib.crc32(array))
    h = h[:16] + struct.pack("<I", zlib.crc32(h)) + h[20:]
    return h.ljust(512, b"\0")
mbr = bytearray(512); mbr[510:512] = b"\x55\xaa"
disk = (bytes(mbr) + header(1, SECTORS - 1, 2) + array).ljust((SECTORS - 2) * 512, b"\0")
disk += array + header(SECTORS - 1, 1, SECTORS - 2)
open(sys.argv[1], "wb").write(b"\x01" + disk)
PY

# grubenv: the header, Tandem variables, a sector filler, a foreign variable, # padding.
python3 - "$SEEDS/grubenv" <<'PY'
import sys
def block(lines, filler):
    out = b"# GRUB Environment Block\n" + b"".join(l + b"\n" for l in lines)
    if filler:
        out = out.ljust(511, b"#") + b"\n" + b"saved_entry=linux\\\nx\n"
    return out.ljust(1024, b"#")
open(sys.argv[1] + "/trial.env", "wb").write(block(
    [b"TANDEM_ORDER=b a", b"TANDEM_A_TRIES=0", b"TANDEM_A_OK=1", b"TANDEM_B_TRIES=3",
     b"TANDEM_B_OK=0"], True))
open(sys.argv[1] + "/empty.env", "wb").write(block([b"TANDEM_ORDER="], False))
PY

# Range headers: 8 bytes of file length (little-endian), then the header value.
i=0
for h in 'bytes=0-99' 'bytes=100-' 'bytes=-500' 'Bytes = 5-5' 'bytes=0-1,5-6' 'bytes=-0'; do
    { python3 -c 'import sys; sys.stdout.buffer.write((1000).to_bytes(8, "little"))'; printf '%s' "$h"; } \
        >"$SEEDS/range/$i"
    i=$((i + 1))
done

# Request paths, one of each route.
i=0
for p in / /dashboard.js /metrics /v1/reports /v1/channels/stable/status /v1/channels/stable/pause \
    /3.root.json /root.json /channels/stable.json /bundles/acme-2.0.0.tandem /v1/channels/a%2Fb/resume \
    /v1/pre-reboot /v1/steady-state /v1/leases /v1/leases/g/n1/release /v1/tokens \
    /v1/tokens/alice/revoke /v1/audit; do
    printf '%s' "$p" >"$SEEDS/route/$i"
    i=$((i + 1))
done

cat >"$SEEDS/report/failed.json" <<'JSON'
{"node_id":"node-7","channel":"stable","from_version":"1.0.0","to_version":"1.1.0+b2","outcome":"rolled-back","reason":"health check `web` failed: exit 1"}
JSON
cat >"$SEEDS/report/installed.json" <<'JSON'
{"node_id":"a.b_c-d","channel":"Beta+1","from_version":"1","to_version":"2","outcome":"installed"}
JSON
printf '{"paused": true, "since": "2026-12-01T10:00:00Z", "reason": "canary failed"}' \
    >"$SEEDS/pause/paused.json"
printf '{"paused": false}' >"$SEEDS/pause/resumed.json"
printf '{"client_params": {"id": "c2a6b5e2d1f04b7c9e8d7a6b5c4d3e2f", "group": "workers"}}' \
    >"$SEEDS/fleetlock/zincati.json"
printf '{"client_params": {"id": "edge-0042"}}' >"$SEEDS/fleetlock/no-group.json"
# node_auth: a first byte 0 (an Authorization value) or 1 (an enrollment body).
printf '\000Tandem-Node key=%s, ts=1765000000, nonce=%s, sig=%s' "$(printf 'ab%.0s' {1..32})" \
    "$(printf '0c%.0s' {1..16})" "$(head -c 64 /dev/zero | base64 -w0)" >"$SEEDS/node_auth/header.txt"
printf '\001{"node_id":"edge-0042","public_key":"%s","token":"0123abcd"}' \
    "$(head -c 32 /dev/zero | base64 -w0)" >"$SEEDS/node_auth/enroll.json"
du -sh "$SEEDS"
