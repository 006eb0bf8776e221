#!/usr/bin/env bash
# Runs the whole test suite N times with the machine loaded, and prints each test's failure
# count: the proof that no test is flaky (issue 16, "Zero flaky tests").
#
#   scripts/stress-tests.sh [-n RUNS] [-l LOAD] [-- NEXTEST-ARGS...]
#
#   -n RUNS   how many runs (default 3)
#   -l LOAD   what runs beside the suite:
#               stress-ng  (default) Debian's stress-ng, one CPU worker per core plus one I/O
#                          and one 256 MiB memory worker; installed with apt-get if missing
#               build      a parallel `cargo build --release` of pgvigil into a scratch target
#                          directory, restarted (from clean) whenever it finishes
#               none       no load (a baseline)
#   NEXTEST-ARGS go to `cargo nextest run` (e.g. a filter: -- -E 'test(pgbouncer)').
#
# The load starts before each run and is stopped after it, whatever happens (its process group
# is killed on exit). Tests are built once, before the first run and without load. The output
# of run i is kept in target/stress/run-i.log. At the end: one line per test that failed at
# least once ("FAILED k/N  binary test"), the pass count of every run, and exit status 1 if
# anything failed. The doctests (scripts/test.sh runs them too) have no timing and are not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=3
load=stress-ng
while [ $# -gt 0 ]; do
    case "$1" in
        -n) runs="$2"; shift 2 ;;
        -l) load="$2"; shift 2 ;;
        --) shift; break ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1; see $0 --help" >&2; exit 2 ;;
    esac
done
case "$load" in stress-ng | build | none) ;; *) echo "unknown load $load" >&2; exit 2 ;; esac

scripts/install-test-deps.sh >/dev/null
if [ "$load" = stress-ng ] && ! command -v stress-ng >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng >/dev/null; }
    else
        echo "stress-ng is missing: apt-get install stress-ng, or use -l build" >&2
        exit 1
    fi
fi

target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/stress"
mkdir -p "$out"
scratch="$(mktemp -d)"
load_pid=""

stop_load() {
    if [ -n "$load_pid" ]; then
        # The load runs in its own process group (setsid): end the whole group, then reap it.
        kill -TERM -- "-$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
        load_pid=""
    fi
}
cleanup() { stop_load; rm -rf "$scratch"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

start_load() {
    local cores
    cores="$(nproc)"
    case "$load" in
        stress-ng)
            setsid stress-ng --cpu "$cores" --io 1 --vm 1 --vm-bytes 256M --quiet >/dev/null 2>&1 &
            load_pid=$!
            ;;
        build)
            setsid bash -c "while :; do CARGO_TARGET_DIR='$scratch/target' cargo build --release --quiet -j '$cores' >/dev/null 2>&1; rm -rf '$scratch/target'; done" &
            load_pid=$!
            ;;
        none) ;;
    esac
}

echo "building the tests (no load yet)"
cargo nextest run --workspace --all-features --no-run "$@" >/dev/null

declare -A failures=()
summary=()
for i in $(seq 1 "$runs"); do
    log="$out/run-$i.log"
    start_load
    started=$(date +%s)
    set +e
    cargo nextest run --workspace --all-features --no-fail-fast --color never "$@" >"$log" 2>&1
    status=$?
    set -e
    stop_load
    took=$(( $(date +%s) - started ))
    # nextest's status lines: "        FAIL [   1.234s] (12/200) binary test::name".
    while read -r name; do
        [ -n "$name" ] || continue
        failures["$name"]=$(( ${failures["$name"]:-0} + 1 ))
    done < <(grep -E '^\s+(FAIL|TIMEOUT|SIG[A-Z]+|ABORT|LEAK-FAIL)\s+\[' "$log" \
        | sed -E 's/^.*\) +//' | sort -u)
    line="$(grep -E '^\s+Summary \[' "$log" | tail -n1 | sed -E 's/^\s+//')"
    summary+=("run $i ($load, ${took}s, exit $status): ${line:-no summary, see $log}")
    echo "${summary[-1]}"
done

echo
echo "=== failures per test over $runs loaded runs ($load)"
if [ "${#failures[@]}" -eq 0 ]; then
    echo "none: every test passed in every run"
else
    for name in "${!failures[@]}"; do
        printf 'FAILED %d/%d  %s\n' "${failures[$name]}" "$runs" "$name"
    done | sort -t' ' -k2,2r
fi
echo "=== runs"
printf '%s\n' "${summary[@]}"
[ "${#failures[@]}" -eq 0 ]
