#!/bin/busybox sh
# /init of the real-boot test's initramfs (tests/tests/realboot). Every line the host test
# reads starts with "TANDEM-" and goes to the first serial port: the entries Tandem writes
# carry no console= parameter, so the kernel itself stays silent there.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec >/dev/ttyS0 2>&1 </dev/null
say() { echo "TANDEM-$*"; }
off() {
  sync
  umount /usb /slot /state /esp 2>/dev/null
  say POWEROFF
  poweroff -f
  sleep 60
}
say INIT
say "INITRD release=$(cat /etc/tandem/initrd-release)"
say "CMDLINE $(cat /proc/cmdline)"
# virtio-blk, vfat and efivarfs are modules in Debian's cloud kernel (ext4 is built in).
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" || say "ERROR insmod $m"; done
i=0
while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
slot=$(sed -n 's/.*tandem\.slot=\([ab]\).*/\1/p' /proc/cmdline)
case "$slot" in
  a) dev=/dev/vda2 ;;
  b) dev=/dev/vda3 ;;
  *) say "ERROR no tandem.slot= on the command line: $(cat /proc/cmdline)"; off ;;
esac
[ -d /sys/firmware/efi ] && { mount -t efivarfs efivarfs /sys/firmware/efi/efivars || say "ERROR efivarfs"; }
# The GPT layout of `tandem-disk create`: 1 ESP, 2 root-a, 3 root-b, 4 state.
mount -t vfat /dev/vda1 /esp || { say "ERROR mount esp"; off; }
mount -t ext4 /dev/vda4 /state || { say "ERROR mount state"; off; }
mount -t vfat -o ro /dev/vdb /usb || { say "ERROR mount usb"; off; }
mount -t ext4 -o ro "$dev" /slot || { say "ERROR mount slot $slot"; off; }
version=$(sed -n 's/^VERSION_ID=//p' /slot/etc/os-release)
say "BOOTED slot=$slot version=$version"
var=/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
[ -e "$var" ] && say "BOOTCOUNTPATH $(tail -c +5 "$var" | tr -d '\000')"
if [ -e /esp/tandem/grubenv ]; then cfg=/etc/tandem/grub.toml; else cfg=/etc/tandem/systemd-boot.toml; fi
tandem-updater --config "$cfg" boot-check
say "BOOT-CHECK rc=$?"
step=$(cat /usb/step 2>/dev/null)
case "$step" in
  install*)
    say "INSTALL-START $step"
    # shellcheck disable=SC2086 # the step is a word list
    tandem-updater --config "$cfg" $step
    say "INSTALL rc=$?"
    ;;
esac
tandem-updater --config "$cfg" status
off
