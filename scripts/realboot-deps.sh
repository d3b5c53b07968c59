#!/usr/bin/env bash
# Provisioning for the real-boot end-to-end test (tests/tests/realboot).
# Idempotent: installs the Debian packages that are missing, then downloads and extracts
# (never installs: its hooks would run initramfs-tools) the Debian cloud kernel into
# target/realboot/kernel/, and prints where it is.
#
#   scripts/realboot-deps.sh            # provision, print the kernel directory
#
# The test finds the kernel in target/realboot/kernel/ (or $TANDEM_REALBOOT_KERNEL_DIR)
# and fails with a message naming this script when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# tool or file -> Debian package that provides it
declare -A NEED=(
  [/usr/bin/qemu-system-x86_64]=qemu-system-x86
  [/usr/share/OVMF/OVMF_CODE_4M.fd]=ovmf
  [/usr/lib/systemd/boot/efi/systemd-bootx64.efi]=systemd-boot-efi
  [/usr/lib/systemd/boot/efi/linuxx64.efi.stub]=systemd-boot-efi
  [/bin/busybox]=busybox-static
  [/usr/sbin/mkfs.vfat]=dosfstools
  [/usr/bin/mcopy]=mtools
  [/usr/sbin/sgdisk]=gdisk
  [/usr/bin/cpio]=cpio
  [/usr/lib/grub/x86_64-efi/normal.mod]=grub-efi-amd64-bin
  [/usr/bin/grub-mkstandalone]=grub-common
  [/usr/sbin/mke2fs]=e2fsprogs
  [/usr/sbin/debugfs]=e2fsprogs
  [/usr/bin/strip]=binutils
  [/usr/bin/objcopy]=binutils
  [/usr/bin/objdump]=binutils
  # The real OS (scripts/build-os.sh) and its network (QEMU's guestfwd to the server)
  [/usr/bin/mmdebstrap]=mmdebstrap
  [/usr/bin/socat]=socat
  # Secure Boot and a verified root (tests/tests/realboot/secureboot.rs): OVMF's Secure Boot
  # build and snakeoil variables come with ovmf; sbsign signs the loader and the UKIs; the
  # initramfs of a verity release carries the host's veritysetup and blkid.
  [/usr/share/OVMF/OVMF_CODE_4M.secboot.fd]=ovmf
  [/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd]=ovmf
  [/usr/share/ovmf/PkKek-1-snakeoil.key]=ovmf
  [/usr/bin/sbsign]=sbsigntool
  [/usr/bin/openssl]=openssl
  [/usr/sbin/veritysetup]=cryptsetup-bin
  [/usr/sbin/blkid]=util-linux
)

missing=()
for f in "${!NEED[@]}"; do
  [ -e "$f" ] || missing+=("${NEED[$f]}")
done
# busybox-static: the static binary (the dynamic `busybox` package also has /bin/busybox)
if [ -e /bin/busybox ] && ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
  missing+=(busybox-static)
fi

if ((${#missing[@]})); then
  echo "realboot-deps: installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  extra=()
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
    # qemu-system-x86 and qemu-utils must come from one suite: a newer qemu-utils (e.g.
    # from backports) Breaks the distribution's qemu-system-common, and apt would otherwise
    # remove it. Take qemu-utils at the same version as qemu-system-x86.
    qver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    if dpkg -s qemu-utils >/dev/null 2>&1; then
      extra+=("qemu-utils=$qver" --allow-downgrades)
    fi
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" "${extra[@]}" >/dev/null
fi
for f in "${!NEED[@]}"; do
  [ -e "$f" ] || { echo "realboot-deps: $f (package ${NEED[$f]}) is still missing" >&2; exit 1; }
done

# The kernel: the version the linux-image-cloud-amd64 meta-package depends on.
dir=target/realboot/kernel
if ! ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  [ -n "$pkg" ] || { echo "realboot-deps: cannot resolve linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # apt-get download runs as _apt when it can
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq "$pkg")
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  dpkg-deb -x "$tmp"/"$pkg"_*.deb "$dir.partial"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
fi
ls "$dir"/boot/vmlinuz-* >/dev/null
echo "$(pwd)/$dir"
