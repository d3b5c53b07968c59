#!/usr/bin/env bash
# Builds a minimal Debian 12 (bookworm) OS that updates itself with Tandem: a read-only
# systemd root filesystem image for one release, the kernel and a small initramfs that
# mounts the slot's root partition read-only and switches to it. docs/building-an-os.md
# walks through every step; the real-boot test (tests/tests/realboot) builds its OS with it.
#
#   scripts/build-os.sh base BASE.tar
#       the Debian root (mmdebstrap), once: every release starts from it
#   scripts/build-os.sh release BASE.tar OUT_DIR
#       one release into OUT_DIR: root.img (ext4), vmlinuz, initrd.img, cmdline
#
# `release` reads (environment):
#   VERSION          the release's version (os-release VERSION_ID), e.g. 2.0.0
#   UPDATER_TOML     the node's /etc/tandem/updater.toml
#   ROOT_JSON        the repository's root.json (/etc/tandem/root.json: the trust anchor)
#   REPORT_TOKEN     optional: the fleet's report token file (/etc/tandem/report-token)
#   TANDEM_BIN       the directory holding tandem-updater (default target/release)
#   KERNEL_DIR       Debian's kernel package extracted (default target/realboot/kernel,
#                    as scripts/realboot-deps.sh leaves it)
#   CMDLINE          the release's kernel parameters (default "console=ttyS0 panic=1 quiet")
#   WORKLOAD=broken  optional: a release whose workload does not start (to prove rollback)
#   USB_CHANNEL      optional: install this channel from a stick labelled TANDEM-UPD when it
#                    is plugged in, and reboot into it (docs/airgap.md)
# Runs as root (mmdebstrap's root mode, and the tree's owners kept for mke2fs -d); makes
# no mounts and no loop devices.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SUITE=bookworm
# What the OS needs besides minbase: systemd as init, udev (devices, the USB stick's label),
# kmod (modules), dbus (systemctl and logind), busybox (the workload's HTTP server).
# usr-is-merged: the root is merged-/usr already; usrmerge, which the essential set brings
# with perl (55 MB), is purged.
# systemd-boot: bootctl and systemd-bless-boot, which blesses a counted entry only after
# tandem-boot-check.service passed (docs/DESIGN.md §5.0).
PACKAGES=systemd-sysv,udev,kmod,dbus,busybox,usr-is-merged,systemd-boot
# Kernel modules the OS loads after the initramfs: the network card, the ESP's filesystem,
# the EFI variables, and those the initramfs loaded (for modprobe and udev to know them).
ROOT_MODULES=(drivers/virtio drivers/block/virtio_blk.ko drivers/net/virtio_net.ko
  drivers/net/net_failover.ko net/core/failover.ko fs/fat fs/nls fs/efivarfs)
# The initramfs's modules, in load order (none depends on a later one).
INITRD_MODULES=(drivers/virtio/virtio_ring drivers/virtio/virtio
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci_modern_dev
  drivers/virtio/virtio_pci drivers/block/virtio_blk)
# Fixed filesystem UUID, hash seed and time: the same tree gives the same image, so
# consecutive releases share most chunks and a delta update fetches only what changed.
FS_UUID=6b1f2c1e-7a51-4c1a-9c61-7a6e6e646f73
FS_SEED=0d5e7a2b-3c4d-4e5f-8a9b-746e646d6f73
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000

# Step 1: the Debian root. No documentation, manuals or translations, no perl, no hardware
# database (udev names devices without it; it only adds vendor and model strings) and no
# character set converters (nothing on the node converts text): the image is written into
# every slot of every node.
base() {
  local out=$1
  mmdebstrap --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/*' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
    --customize-hook='rm -f "$1/usr/lib/udev/hwdb.bin" "$1/etc/udev/hwdb.bin"' \
    --customize-hook='chroot "$1" apt-get -y -q purge usrmerge perl libperl5.36 perl-modules-5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl' \
    --customize-hook='chroot "$1" apt-get clean' \
    "$SUITE" "$out"
}

# Step 2: Tandem, installed as docs/building-an-os.md says: the agent, the units and the USB
# rule from dist/ unmodified, the node's configuration and trust anchor.
install_tandem() {
  local root=$1
  install -D -m 0755 "$TANDEM_BIN/tandem-updater" "$root/usr/bin/tandem-updater"
  strip "$root/usr/bin/tandem-updater"
  for unit in tandem-updater.service tandem-boot-check.service tandem-usb-install@.service; do
    install -D -m 0644 "$REPO/dist/$unit" "$root/usr/lib/systemd/system/$unit"
  done
  install -D -m 0755 "$REPO/dist/tandem-usb-install" "$root/usr/lib/tandem/tandem-usb-install"
  install -D -m 0644 "$REPO/dist/90-tandem-usb.rules" "$root/etc/udev/rules.d/90-tandem-usb.rules"
  install -D -m 0644 "$UPDATER_TOML" "$root/etc/tandem/updater.toml"
  install -D -m 0644 "$ROOT_JSON" "$root/etc/tandem/root.json"
  if [ -n "${REPORT_TOKEN:-}" ]; then
    install -D -m 0600 "$REPORT_TOKEN" "$root/etc/tandem/report-token"
  fi
  chroot "$root" systemctl enable tandem-updater.service tandem-boot-check.service
  if [ -n "${USB_CHANNEL:-}" ]; then
    printf 'TANDEM_USB_CHANNEL=%s\nTANDEM_USB_REBOOT=yes\n' "$USB_CHANNEL" \
      >"$root/etc/tandem/usb-install.env"
  fi
}

# Step 3: a read-only root. /var is a tmpfs (the journal is volatile), the node's state is
# the state partition at /var/lib/tandem, the ESP is at /efi (where systemd looks for it),
# /etc/machine-id is empty: systemd makes it at boot (docs/building-an-os.md, "Identity").
read_only_root() {
  local root=$1
  cat >"$root/etc/fstab" <<'EOF'
# The root stays read-only: it is one of Tandem's A/B slots, written only by the agent.
/dev/root        /                ext4   ro                       0 0
tmpfs            /var             tmpfs  mode=0755,size=64m       0 0
tmpfs            /tmp             tmpfs  mode=1777,size=64m       0 0
PARTLABEL=state  /var/lib/tandem  ext4   defaults                 0 2
PARTLABEL=ESP    /efi             vfat   umask=0077,flush         0 2
EOF
  mkdir -p "$root/efi" "$root/var/lib/tandem"
  : >"$root/etc/machine-id"
  echo tandem-node >"$root/etc/hostname"
  mkdir -p "$root/etc/systemd/journald.conf.d"
  cat >"$root/etc/systemd/journald.conf.d/tandem-console.conf" <<'EOF'
# The journal is in memory (/var is a tmpfs) and copied to the serial console, where the
# node's story can be read from outside.
[Journal]
Storage=volatile
ForwardToConsole=yes
TTYPath=/dev/ttyS0
MaxLevelConsole=info
EOF
  mkdir -p "$root/etc/systemd/network"
  cat >"$root/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
  chroot "$root" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service
  # Nothing on a read-only root that nobody logs in to needs these: apt's timers (packages
  # change only by a new release), logins (gettys, logind), utmp records on a volatile /var,
  # scrubbing LVM snapshots that do not exist. Masked, every boot starts fewer units.
  chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer e2scrub_reap.service getty.target systemd-logind.service \
    systemd-update-utmp.service systemd-update-utmp-runlevel.service
}

# Step 4: the node's workload, the service the health checks look at: busybox's HTTP server
# answering /healthz, active only once it answers. WORKLOAD=broken leaves out its content,
# and the service fails to start.
workload() {
  local root=$1
  cat >"$root/usr/bin/acme-app" <<'EOF'
#!/bin/sh
# The workload: serves /usr/share/acme-app/www on 127.0.0.1:8080.
www=/usr/share/acme-app/www
[ -f "$www/healthz" ] || { echo "acme-app: $www/healthz is missing, cannot serve" >&2; exit 1; }
exec busybox httpd -f -p 127.0.0.1:8080 -h "$www"
EOF
  chmod 0755 "$root/usr/bin/acme-app"
  cat >"$root/usr/lib/systemd/system/acme-app.service" <<'EOF'
[Unit]
Description=Acme workload (HTTP on 127.0.0.1:8080)

[Service]
ExecStart=/usr/bin/acme-app
# Active only once it answers: the boot check probes it right after multi-user.target.
# Gives up as soon as the server is gone (systemd passes its pid as MAINPID).
ExecStartPost=/bin/sh -c 'until busybox wget -q -O /dev/null http://127.0.0.1:8080/healthz; do kill -0 ${MAINPID} || exit 1; sleep 0.2; done'
TimeoutStartSec=60s

[Install]
WantedBy=multi-user.target
EOF
  # What booted, in the journal: the release and the kernel's command line.
  cat >"$root/usr/lib/systemd/system/acme-boot-info.service" <<'EOF'
[Unit]
Description=Log the release and the kernel command line that booted

[Service]
Type=oneshot
SyslogIdentifier=acme-boot-info
ExecStart=/bin/sh -c '. /etc/os-release; echo "booted $$NAME $$VERSION_ID, kernel command line: $$(cat /proc/cmdline)"'

[Install]
WantedBy=multi-user.target
EOF
  chroot "$root" systemctl enable acme-boot-info.service
  if [ "${WORKLOAD:-}" != broken ]; then
    mkdir -p "$root/usr/share/acme-app/www"
    echo ok >"$root/usr/share/acme-app/www/healthz"
  fi
  chroot "$root" systemctl enable acme-app.service
}

# Step 5: the release's identity, and the kernel's modules.
identity_and_modules() {
  local root=$1 kver=$2
  # /etc/os-release is a link to /usr/lib/os-release: replace the file it points to.
  rm -f "$root/usr/lib/os-release"
  cat >"$root/usr/lib/os-release" <<EOF
PRETTY_NAME="Acme Edge $VERSION"
NAME="Acme Edge"
ID=acme-edge
ID_LIKE=debian
VERSION_ID=$VERSION
EOF
  ln -sfn ../usr/lib/os-release "$root/etc/os-release"
  local src=$KERNEL_DIR/lib/modules/$kver dst=$root/usr/lib/modules/$kver
  mkdir -p "$dst/kernel"
  cp "$src"/modules.order "$src"/modules.builtin* "$dst/"
  for m in "${ROOT_MODULES[@]}"; do
    mkdir -p "$dst/kernel/$(dirname "$m")"
    cp -r "$src/kernel/$m" "$dst/kernel/$m"
  done
  chroot "$root" depmod "$kver"
}

# Step 6: the root filesystem image, 10 % and 16 MiB larger than its content (inodes, the
# journal): the root is read-only, free space in it is never used, and every block of the
# slot is hashed at each install.
root_image() {
  local root=$1 out=$2
  local kib
  kib=$(du -sk "$root" | cut -f1)
  kib=$((kib * 11 / 10 + 16384))
  mke2fs -q -F -t ext4 -b 4096 -L acme-root -U "$FS_UUID" -E "hash_seed=$FS_SEED" -d "$root" "$out" "${kib}k"
}

# The modules dm-verity needs, in load order, and the host's tools that open the mapping and
# find its partition by PARTUUID (with the libraries they link).
VERITY_MODULES=(lib/reed_solomon/reed_solomon drivers/md/dm-mod drivers/md/dm-bufio
  drivers/md/dm-verity)
VERITY_TOOLS=(/usr/sbin/veritysetup /usr/sbin/blkid)

# Step 7: the kernel and the initramfs: busybox, the virtio modules and an /init that mounts
# the slot the loader booted read-only and hands over to systemd. Without Secure Boot the
# slot is named by tandem.slot= (the GPT partition named root-a or root-b); a verified root
# (VERITY=yes) by the fixed command line: roothash= and the PARTUUID that hash derives
# (systemd.verity_root_data=), the tree after the filesystem (hash-offset=), opened with
# veritysetup as /dev/mapper/root.
initramfs() {
  local kver=$1 out=$2
  local tree
  tree=$(mktemp -d)
  mkdir -p "$tree"/{bin,dev,proc,sys,root,run,lib/modules}
  cp /bin/busybox "$tree/bin/busybox"
  : >"$tree/lib/modules/order"
  local modules=("${INITRD_MODULES[@]}")
  if [ "${VERITY:-}" = yes ]; then
    modules+=("${VERITY_MODULES[@]}")
    local tool lib
    for tool in "${VERITY_TOOLS[@]}"; do
      install -D -m 0755 "$tool" "$tree/bin/$(basename "$tool")"
      for lib in $(ldd "$tool" | grep -o '/[^ ]*'); do
        install -D -m 0755 "$lib" "$tree$lib"
      done
    done
  fi
  for m in "${modules[@]}"; do
    cp "$KERNEL_DIR/lib/modules/$kver/kernel/$m.ko" "$tree/lib/modules/"
    basename "$m" >>"$tree/lib/modules/order"
  done
  cat >"$tree/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko"; done
param() { sed -n "s/.*$1\([^ ]*\).*/\1/p" /proc/cmdline; }
slot=$(param 'tandem\.slot=')
roothash=$(param 'roothash=')
uuid=$(param 'systemd\.verity_root_data=PARTUUID=')
dev=
i=0
while [ -z "$dev" ] && [ $i -lt 100 ]; do
  if [ -n "$roothash" ]; then
    dev=$(blkid -l -o device -t "PARTUUID=$uuid" 2>/dev/null || true)
  else
    for u in /sys/class/block/*/uevent; do
      grep -qx "PARTNAME=root-$slot" "$u" && dev=/dev/$(sed -n 's/^DEVNAME=//p' "$u")
    done
  fi
  [ -n "$dev" ] || { sleep 0.1; i=$((i + 1)); }
done
if [ -n "$roothash" ] && [ -n "$dev" ]; then
  offset=$(param 'systemd\.verity_root_options=hash-offset=')
  if veritysetup open "$dev" root "$dev" "$roothash" --hash-offset="$offset"; then
    echo "initramfs: dm-verity root $roothash on $dev (PARTUUID=$uuid) as /dev/mapper/root" >/dev/kmsg
    dev=/dev/mapper/root
  else
    echo "initramfs: veritysetup open $dev (PARTUUID=$uuid) failed" >/dev/kmsg
    dev=
  fi
fi
if [ -z "$dev" ] || ! mount -t ext4 -o ro "$dev" /root; then
  echo "initramfs: cannot mount the root (tandem.slot=$slot roothash=$roothash) read-only" >/dev/kmsg
  exit 1
fi
umount /proc /sys
mount --move /dev /root/dev
exec switch_root /root /sbin/init
EOF
  chmod 0755 "$tree/init"
  (cd "$tree" && find . | cpio -o -H newc --quiet) >"$out"
  rm -rf "$tree"
}

# VERITY=yes (environment of `release`): a verified root (docs/signing.md, "A verified
# root"): `tandem-signer verity` (from TANDEM_BIN) writes root.verity and root.params beside
# root.img, its command line is appended to `cmdline`, and the initramfs gets veritysetup
# and the dm-verity modules. (Documented here, not above: the text before step 2 keys the
# cached Debian root of the real-boot test.)
release() {
  local base=$1 out=$2
  : "${VERSION:?}" "${UPDATER_TOML:?}" "${ROOT_JSON:?}"
  TANDEM_BIN=${TANDEM_BIN:-$REPO/target/release}
  KERNEL_DIR=${KERNEL_DIR:-$REPO/target/realboot/kernel}
  local vmlinuz kver
  vmlinuz=$(ls "$KERNEL_DIR"/boot/vmlinuz-*)
  kver=${vmlinuz##*/vmlinuz-}
  mkdir -p "$out"
  local root=$out/root.tree
  rm -rf "$root"
  mkdir -p "$root"
  tar -C "$root" --numeric-owner -xpf "$base"
  install_tandem "$root"
  read_only_root "$root"
  workload "$root"
  identity_and_modules "$root" "$kver"
  root_image "$root" "$out/root.img"
  rm -rf "$root"
  cp "$vmlinuz" "$out/vmlinuz"
  initramfs "$kver" "$out/initrd.img"
  local cmdline=${CMDLINE:-console=ttyS0 panic=1 quiet}
  if [ "${VERITY:-}" = yes ]; then
    "$TANDEM_BIN/tandem-signer" verity "$out/root.img" -o "$out/root.verity" >"$out/root.params"
    cmdline="$cmdline $(sed -n 3p "$out/root.params")"
  fi
  echo "$cmdline" >"$out/cmdline"
}

case "${1:-}" in
  base) base "${2:?BASE.tar}" ;;
  release) release "${2:?BASE.tar}" "${3:?OUT_DIR}" ;;
  *) sed -n '2,23p' "$0" >&2; exit 2 ;;
esac
