#!/usr/bin/env bash
# The quick start: Tandem's whole story on image files and loopback, no root, nothing to
# install beyond the Rust toolchain. Keys with a 2-of-3 release role; a disk with A/B slots
# provisioned with v1 and booted through systemd-boot entries on an ESP directory; v2 and a
# broken v3, each with its own kernel, initramfs and command line, signed and published;
# tandem-server started; the agent installs v2 (image and kernel) over HTTP, the reference
# firmware reboots into it, health passes, it is committed; v3 (v2 with 64 KiB changed, signed
# with --previous v2) is installed as a delta, fetching about what changed; it fails its health
# check and rolls back to v2's slot and kernel; the server's status shows both.
# Work files: target/demo/ (the log of every command: target/demo/demo.log).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W="$ROOT/target/demo"
LOG="$W/demo.log"
rm -rf "$W" && mkdir -p "$W"
cd "$W"

# Bold only on a terminal, and never with NO_COLOR set (https://no-color.org).
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    step() { printf '\033[1m==>\033[0m %s\n' "$*"; }
else
    step() { printf '==> %s\n' "$*"; }
fi
run() { echo "+ $*" >>"$LOG"; "$@" >>"$LOG" 2>&1 || { echo "FAILED: $* (see $LOG)" >&2; tail -20 "$LOG" >&2; exit 1; }; }

step "building tandem-signer, tandem-disk, tandem-updater, tandem-server"
cargo build -q --manifest-path "$ROOT/Cargo.toml" --bins
BIN=$(cargo metadata -q --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug
export PATH="$BIN:$PATH"

step "release keys: a root key and three release keys, any 2 of which sign a release"
run tandem-signer keygen --out root
for k in r1 r2 r3; do run tandem-signer keygen --out $k; done
run tandem-signer root init -o root.json --root-key root.pub.pem --root-threshold 1 \
    --release-key r1.pub.pem --release-key r2.pub.pem --release-key r3.pub.pem \
    --release-threshold 2 --expires 365d --sign-with root.pem

# An "OS image": an os-release block the health check reads, 6 MiB of data, then zeros.
make_image() {  # VERSION HEALTHY
    { printf 'NAME=Acme Edge\nVERSION=%s\nHEALTHY=%s\n' "$1" "$2"; head -c 4096 /dev/zero; } | head -c 4096 >"v$1.img"
    head -c $((6 << 20)) /dev/urandom >>"v$1.img"
    truncate -s 24M "v$1.img"
}
# v3 is v2 with its os-release block and 64 KiB of data changed: what a delta update fetches.
derive_image() {  # VERSION HEALTHY FROM
    cp "v$3.img" "v$1.img"
    { printf 'NAME=Acme Edge\nVERSION=%s\nHEALTHY=%s\n' "$1" "$2"; head -c 4096 /dev/zero; } | head -c 4096 \
        | dd of="v$1.img" conv=notrunc status=none
    head -c $((64 << 10)) /dev/urandom | dd of="v$1.img" bs=4096 seek=256 conv=notrunc status=none
}
make_image 1 yes; make_image 2 yes; derive_image 3 no 2
# Stand-ins for each release's kernel and initramfs (the real-boot test uses real ones).
for v in 1 2 3; do echo "Linux kernel of Acme Edge $v" >vmlinuz-$v; echo "initramfs $v" >initrd-$v; done

step "disk.img: GPT with ESP, root-a, root-b, state; boot entries on esp/ (systemd-boot); factory v1 in slot A"
run tandem-disk create disk.img --size 128MiB --slot-size 32MiB --esp 8MiB --state 8MiB
run tandem-disk init-boot disk.img --backend systemd-boot --esp esp
run tandem-disk write-slot disk.img a v1.img --esp esp
mkdir -p esp/tandem/a && cp vmlinuz-1 esp/tandem/a/vmlinuz && cp initrd-1 esp/tandem/a/initrd.img

step "signing v2 and v3 with their kernels (r1 signs, then r2 adds its signature on another machine);
    v3 names v2 as the release in the field (--previous), so v3's new chunks get frames of their own"
for v in 2 3; do
    previous=(); [ "$v" = 3 ] && previous=(--previous v2.tandem)
    run tandem-signer sign --image v$v.img --product acme-edge --version $v.0.0 --security-version 1 \
        --kernel vmlinuz-$v --initrd initrd-$v --cmdline "quiet acme.release=$v" --key r1.pem \
        "${previous[@]}" -o v$v.tandem
    run tandem-signer add-signature v$v.tandem --key r2.pem
    run tandem-signer verify v$v.tandem --root root.json
done

step "publishing v2 on channel 'stable' and starting tandem-server on loopback"
run tandem-signer publish --repo repo --channel stable --key r1.pem --key r3.pem --root root.json v2.tandem
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >report.token
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >admin.token
tandem-server serve --repo repo --listen 127.0.0.1:0 --data data \
    --report-token-file report.token --admin-token-file admin.token 2>server.log &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'listening on' server.log && break; sleep 0.1; done
URL=$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' server.log | head -1)
[ -n "$URL" ] || { echo "tandem-server did not start:" >&2; cat server.log >&2; exit 1; }
PORT=${URL##*:}

# The node: the health check reads HEALTHY= from the OS the firmware booted.
cat >health.sh <<'SH'
#!/bin/sh
slot=$(cat booted)
offset=$(tandem-disk show disk.img --esp esp --json | grep '"offset"' | sed -n "$([ "$slot" = a ] && echo 1 || echo 2)p" | tr -dc 0-9)
dd if=disk.img bs=4096 skip=$((offset / 4096)) count=1 2>/dev/null | grep -q '^HEALTHY=yes'
SH
chmod +x health.sh
boot() {  # the reference firmware picks a slot; the node "runs" it
    local slot; slot=$(tandem-disk boot disk.img --esp esp)
    echo "$slot" >booted
    sed -i "s/^booted_slot = .*/booted_slot = \"$slot\"/" updater.toml
    echo "$slot"
}
cat >updater.toml <<TOML
disk = "disk.img"
boot = "systemd-boot"
esp = "esp"
state = "state/state.json"
root = "root.json"
product = "acme-edge"
node_id = "demo-node-1"
booted_slot = "a"
reboot = ["true"]
[[health]]
exec = ["./health.sh"]
timeout = "10s"
[server]
url = "$URL/"
channel = "stable"
report_token_file = "report.token"
TOML
echo a >booted
updater() { tandem-updater --config updater.toml "$@"; }
kernel_of() {  # SLOT: what its boot entry starts, as the loader reads it
    local entry; entry=$(ls esp/loader/entries/tandem-"$1"*.conf)
    echo "$(basename "$entry"): $(cat "esp/tandem/$1/vmlinuz"), options $(sed -n 's/^options //p' "$entry")"
}
status() {  # NAME: GET the channel status into NAME.json, print a one-line summary
    exec 3<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'GET /v1/channels/stable/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    sed '1,/^\r$/d' <&3 >"$1.json"
    exec 3<&-
    tr -d ' \n' <"$1.json" | sed -n 's/.*"by_version":{\([^}]*\)}.*"current_release":{"version":"\([^"]*\)","outcomes":{\([^}]*\)}.*/release \2: \3; nodes per version: \1/p'
}

step "node polls $URL: installs v2 over HTTP into slot B"
run updater daemon --once --no-reboot
step "reboot: the firmware boots slot $(boot)"
step "boot-check: $(updater boot-check 2>>"$LOG")"
step "slot B boots v2's own kernel: $(kernel_of b)"
step "slot A keeps the factory kernel: $(kernel_of a)"
step "server status: $(status after-v2)"
grep -q '"committed": *1' after-v2.json || { echo "unexpected status (see $W/after-v2.json)" >&2; exit 1; }

step "publishing v3 (its health check will fail)"
run tandem-signer publish --repo repo --channel stable --key r2.pem --key r3.pem --root root.json v3.tandem
step "node polls: installs v3 into slot A, copying what slot B (v2) already holds"
run updater daemon --once --no-reboot
step "$(grep -o 'installed 3.0.0 into slot .*' "$LOG" | tail -1)"
step "reboot: the firmware boots slot $(boot)"
step "boot-check: $(updater boot-check 2>>"$LOG" || true)"
step "reboot: the firmware boots slot $(boot) (v3 is marked bad)"
step "boot-check: $(updater boot-check 2>>"$LOG")"
step "slot B runs v2's kernel again: $(kernel_of b)"
step "node polls again: $(updater daemon --once --no-reboot 2>>"$LOG")"

step "server status: $(status after-v3)"
grep -q '"rolled-back": *1' after-v3.json && grep -q '"2.0.0": *1' after-v3.json \
    || { echo "unexpected status (see $W/after-v3.json)" >&2; exit 1; }
step "done: v2 committed in slot B, v3 rolled back, the node still runs v2 (work files: $W)"
