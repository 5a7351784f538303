#!/usr/bin/env bash
# Runs every sluice-proto fuzz target for N inputs each (default 1,000,000) and prints the
# number of inputs each one ran. Installs cargo-fuzz if it is missing.
#
#   proto/fuzz/run.sh              # every target, 1,000,000 inputs each
#   proto/fuzz/run.sh 5000000      # every target, 5,000,000 inputs each
#   proto/fuzz/run.sh 100000 batch_reader
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags. The crate forbids
# unsafe code, so no sanitizer is used (`--sanitizer none`); debug assertions and overflow
# checks are on (`-a`), so an arithmetic overflow is a crash too. A crash stops the run with
# the failing input saved under proto/fuzz/artifacts/<target>/ and a non-zero exit status.
set -euo pipefail

runs="${1:-1000000}"
shift || true
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    log="$(mktemp)"
    if ! cargo fuzz run --sanitizer none -a "$target" "corpus/$target" "${seeds[@]}" -- \
        -runs="$runs" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FUZZ CRASH: target $target (see proto/fuzz/artifacts/$target/)"
        exit 1
    fi
    done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    echo "$target: ${done_line:-no 'Done' line; see $log}"
    rm -f "$log"
done
