#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# The libFuzzer targets of fuzz/ (README.md, "Fuzzing"), through cargo-fuzz on the
# stable toolchain (RUSTC_BOOTSTRAP=1). Installs cargo-fuzz if it is missing,
# builds every target with AddressSanitizer, debug assertions and overflow checks,
# writes the seed corpus from the tests' vectors and encoders, then:
#
#   scripts/fuzz.sh ci              each target for FUZZ_SECONDS (default 7) seconds
#   scripts/fuzz.sh long SECONDS    each target for SECONDS, one after another, niced
#   scripts/fuzz.sh run TARGET [LIBFUZZER ARGS...]
#   scripts/fuzz.sh build           build and write the seeds only
#
# FUZZ_TARGETS="a b" limits ci and long to those targets.
#
# Prints the executions of each target and their total. Exits non-zero on any
# finding (crash, panic, leak, timeout, out of memory); the input that found it
# is kept in fuzz/artifacts/TARGET/ and can be replayed with
# `scripts/fuzz.sh run TARGET fuzz/artifacts/TARGET/FILE`.
set -eu
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

usage() {
    sed -n '3,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
command=$1
shift

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

host=$(rustc -vV | sed -n 's/^host: //p')
bin="fuzz/target/$host/release"
# The fuzz crate has its own lock, made from the main crate's: refuse to drift.
cargo fetch --locked --manifest-path fuzz/Cargo.toml
# -a: debug assertions and overflow checks (fuzz/Cargo.toml's release profile
# asks for them too).
cargo fuzz build -a
"$bin/seed_corpus" tests/data fuzz/corpus
targets=${FUZZ_TARGETS:-$(cargo fuzz list | grep -vx seed_corpus)}

# Runs every target for $1 seconds, one after another; prints the executions.
fuzz_all() {
    seconds=$1
    total=0
    mkdir -p fuzz/logs
    for target in $targets; do
        log="fuzz/logs/$target.log"
        mkdir -p "fuzz/artifacts/$target"
        # -timeout: an input that takes 10 s is a hang, and a finding.
        if ! nice "$bin/$target" -max_total_time="$seconds" -timeout=10 \
            -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
            "fuzz/corpus/$target" >"$log" 2>&1; then
            tail -n 60 "$log"
            echo "fuzz: $target FAILED (log: $log, input: fuzz/artifacts/$target/)"
            exit 1
        fi
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        total=$((total + runs))
        printf 'fuzz: %-18s %12d executions in %s s\n' "$target" "$runs" "$seconds"
    done
    printf 'fuzz: %-18s %12d executions, no findings\n' total "$total"
}

case $command in
    build) ;;
    ci) fuzz_all "${FUZZ_SECONDS:-7}" ;;
    long)
        [ $# -eq 1 ] || usage
        fuzz_all "$1"
        ;;
    run)
        [ $# -ge 1 ] || usage
        target=$1
        shift
        mkdir -p "fuzz/artifacts/$target"
        exec "$bin/$target" -artifact_prefix="fuzz/artifacts/$target/" "$@"
        ;;
    *) usage ;;
esac
