#!/usr/bin/env bash
# The one test command (README): installs the external tools the interoperability
# tests need when they are missing, checks formatting and lints, then runs every test.
# A missing tool is an error here, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package that provides it
declare -A TOOL_PACKAGE=(
  [sgdisk]=gdisk
  [cgpt]=cgpt
  [grub-editenv]=grub-common
  [grub-emu]=grub-emu
  [bootctl]=systemd-boot
  [openssl]=openssl
  [zstd]=zstd
  [mke2fs]=e2fsprogs
  [mkfs.vfat]=dosfstools
  [mcopy]=mtools
  [unshare]=util-linux
  [softhsm2-util]=softhsm2
  [pkcs11-tool]=opensc
  [systemd-analyze]=systemd
  [chromium]=chromium
  [veritysetup]=cryptsetup-bin
  [curl]=curl
  [sqlite3]=sqlite3
)

missing=()
for tool in "${!TOOL_PACKAGE[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${TOOL_PACKAGE[$tool]}")
done
# The server's PostgreSQL tests start a throwaway cluster with initdb and pg_ctl, which
# Debian keeps off PATH in /usr/lib/postgresql/VERSION/bin.
pg_tools() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; }
pg_tools || missing+=(postgresql)
if ((${#missing[@]})); then
  echo "test.sh: installing missing packages: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in "${!TOOL_PACKAGE[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "test.sh: $tool is still missing after install" >&2; exit 1; }
done
pg_tools || { echo "test.sh: PostgreSQL (initdb) is still missing after install" >&2; exit 1; }


# The real-boot test (QEMU + OVMF + systemd-boot/GRUB): its packages and a Debian kernel.
scripts/realboot-deps.sh >/dev/null

cargo fmt --all -- --check
# The architecture's invariants that a tool can check (ARCHITECTURE.md): no import circle
# between the files of a crate, the node's agent links the format crate and never the signer
# (nor its HSM crate), the server links neither.
python3 scripts/import-cycles.py
forbid_link() {  # CRATE DEPENDENCY
  if cargo tree --locked -p "$1" -e normal --prefix none | grep -q "^$2 v"; then
    echo "test.sh: $1 links $2 (ARCHITECTURE.md forbids it)" >&2
    exit 1
  fi
}
forbid_link updater signer
forbid_link updater cryptoki
forbid_link server signer
forbid_link server bundle
forbid_link repo-client bundle
forbid_link repo-client signer
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz targets are not a workspace member (scripts/fuzz.sh runs them): keep them compiling
# against the libraries' current API.
cargo check --manifest-path fuzz/Cargo.toml --bins --locked
# End-to-end tests drive the real binaries: build them first.
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
