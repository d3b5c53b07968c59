# Shared by the install benchmarks (sourced, not run): the 1 GiB image, the release binaries,
# and a throwaway root of trust. Expects ROOT (the repository) and WORK (bench/work).

# The signer benchmark's 1 GiB OS-like image (bench/sign.sh builds it once).
os_image() {
    [ -f "$WORK/os.img" ] || SIZE_MIB=1024 REPS=1 "$ROOT/bench/sign.sh" >/dev/null || return 1
    echo "$WORK/os.img"
}

# Builds tandem-signer, tandem-disk and tandem-updater (release) and prints their directory.
release_bins() {
    echo "building tandem-signer, tandem-disk, tandem-updater (release)" >&2
    cargo build --release -q --manifest-path "$ROOT/Cargo.toml" --bin tandem-signer --bin tandem-disk --bin tandem-updater \
        || return 1
    echo "$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
}

# trust_root DIR: root and release keys and a root of trust (DIR/root.json) signing one with
# the other, thresholds 1.
trust_root() {
    local dir=$1
    "$BIN/tandem-signer" keygen --out "$dir/root" >/dev/null
    "$BIN/tandem-signer" keygen --out "$dir/release" >/dev/null
    "$BIN/tandem-signer" root init -o "$dir/root.json" --root-key "$dir/root.pub.pem" --root-threshold 1 \
        --release-key "$dir/release.pub.pem" --release-threshold 1 --expires 30d --sign-with "$dir/root.pem" >/dev/null
}

# bench_config DIR [LINE...]: DIR/updater.toml for a node whose disk is DIR/disk.img (booted
# from slot a, GPT attributes), its state in DIR/state, trusting DIR/root.json; each LINE is
# appended.
bench_config() {
    local dir=$1; shift
    {
        printf 'disk = "%s/disk.img"\nboot = "gpt"\nstate = "%s/state/state.json"\n' "$dir" "$dir"
        printf 'root = "%s/root.json"\nproduct = "bench"\nbooted_slot = "a"\nreboot = ["true"]\n' "$dir"
        printf '%s\n' "$@"
    } > "$dir/updater.toml"
}
