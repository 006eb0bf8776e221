#!/usr/bin/env bash
# Callgrind profiles of pgvigil at full fidelity (top_k = 10000, max_tables = 10000) on the
# benchmark's data (8,000 statements, 2,000 tables): one poll, and one scrape of each format,
# separately. Instruction counts, repeatable on a shared machine (perf's hardware counters are
# not available on this kind of VM). ~5 min; needs valgrind (Debian: valgrind).
#
#   bench/profile.sh [--out DIR] [--pgvigil BIN] [--no-write]
#   bench/profile.sh --out DIR --resummarise     # re-read the callgrind files of an earlier run
#
# Writes DIR/profile.md and the callgrind files (open them with callgrind_annotate or
# kcachegrind) and regenerates the profile section of BENCHMARKS.md unless --no-write.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="" bin="" write=1 pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift ;;
        --pgvigil) bin="$2"; shift ;;
        --no-write) write=0 ;;
        -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) pass+=("$1") ;;
    esac
    shift
done
[[ " ${pass[*]-} " == *" --resummarise "* ]] && bin="${bin:-unused}"
command -v valgrind >/dev/null || { echo "valgrind not found (Debian: apt-get install valgrind)" >&2; exit 1; }
[ -n "$out" ] || out="$(mktemp -d -t pgvigil-profile.XXXXXX)"
if [ -z "$bin" ]; then
    (cd "$repo" && cargo build --release --quiet --bin pgvigil)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/pgvigil"
fi
[ "$write" = 1 ] && pass+=(--benchmarks "$repo/BENCHMARKS.md")
cd "$repo/bench"
exec python3 -m sidebyside.profile --pgvigil "$bin" --out "$out" "${pass[@]}"
