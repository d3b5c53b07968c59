#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time, one after the other, and prints per
# target the executions, the coverage reached and whether it found a crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Installs cargo-fuzz (from crates.io) when missing. The toolchain is stable: cargo-fuzz's
# nightly-only flag is allowed with RUSTC_BOOTSTRAP=1. Targets are built in release mode with
# debug assertions and overflow checks, without a sanitizer (the crates forbid `unsafe`).
# The corpus grows in fuzz/corpus/<target> (not committed), starting from fuzz/seeds/<target>
# and helped by the tokens in fuzz/dicts/<target>.dict;
# a crash is saved in fuzz/artifacts/<target>/ and reproduced with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a <target> fuzz/artifacts/<target>/crash-…
# (run in fuzz/). Exit status: 0 when no target crashed, 1 otherwise. Not part of CI:
# scripts/test.sh keeps the property tests.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_PER_TARGET=${1:-60}
shift || true
FLAGS=(-s none -a)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$ROOT/fuzz"
cargo fuzz build "${FLAGS[@]}"
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi

LOGS=$ROOT/fuzz/logs
mkdir -p "$LOGS"
failed=0
printf '%-16s %12s %9s %7s %7s  %s\n' target executions exec/s cov corpus result
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log=$LOGS/$t.log
    dict=()
    [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
    status=0
    cargo fuzz run "${FLAGS[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    corpus=$(find "corpus/$t" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        result="no crash"
    else
        result="CRASH (exit $status): $(grep -m1 -o 'artifacts/[^ ]*' "$log" || echo "see $log")"
        failed=1
    fi
    printf '%-16s %12s %9s %7s %7s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$corpus" "$result"
done
echo "logs: $LOGS"
exit $failed
