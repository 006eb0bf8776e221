#!/usr/bin/env bash
# pgvigil beside Debian's prometheus-postgres-exporter on the same scratch cluster, then one
# pgvigil watching a fleet of targets; writes its tables into BENCHMARKS.md (a section it owns).
#
#   bench/side-by-side.sh             full run (~20 min on 2 cores): builds pgvigil --release,
#                                     regenerates BENCHMARKS.md's side-by-side section and
#                                     bench/side-by-side.png (when matplotlib is importable)
#   bench/side-by-side.sh --smoke     tiny sizes, seconds; writes only to --out (the test suite
#                                     runs this so the script cannot rot)
#
# Options: --out DIR (default: a new temp dir; results.json, report.md, logs), --pgvigil BIN
# (skip the build, measure this binary), --no-fleet, --no-wide (no every-database case),
# --fleet-only (the fleet and every-database cases only, into --out; BENCHMARKS.md untouched),
# --fleet-sizes 1,100,500, --no-write (full run without touching BENCHMARKS.md).
# Needs the PostgreSQL server binaries, pgbench, psql, prometheus-postgres-exporter and
# python3 (scripts/install-test-deps.sh installs them); run as root it runs PostgreSQL as the
# OS user postgres. Nothing is left running or on disk but --out.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

smoke=0 write=1 out="" bin="" pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1; pass+=(--smoke) ;;
        --out) out="$2"; shift ;;
        --pgvigil) bin="$2"; shift ;;
        --no-write) write=0 ;;
        --no-fleet) pass+=(--no-fleet) ;;
        --no-wide) pass+=(--no-wide) ;;
        --fleet-only) write=0; pass+=(--fleet-only) ;;
        --fleet-sizes) pass+=(--fleet-sizes "$2"); shift ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1; see bench/side-by-side.sh --help" >&2; exit 2 ;;
    esac
    shift
done

for prog in python3 prometheus-postgres-exporter runuser; do
    command -v "$prog" >/dev/null || { echo "$prog not found: run scripts/install-test-deps.sh" >&2; exit 1; }
done
[ -n "$out" ] || out="$(mktemp -d -t pgvigil-side-by-side.XXXXXX)"
mkdir -p "$out"

if [ -z "$bin" ]; then
    (cd "$repo" && cargo build --release --quiet --bin pgvigil)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/pgvigil"
fi

cmd="bench/side-by-side.sh"; [ "$smoke" = 1 ] && cmd+=" --smoke"
for a in "${pass[@]}"; do [ "$a" = --fleet-only ] && cmd+=" --fleet-only"; done
python=python3
if [ "$smoke" = 0 ] && [ "$write" = 1 ]; then
    pass+=(--benchmarks "$repo/BENCHMARKS.md" --chart "$repo/bench/side-by-side.png")
    # The chart needs matplotlib: from PyPI into a venv of the benchmark's own (gitignored).
    venv="$repo/bench/.venv"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        python3 -m venv "$venv" && "$venv/bin/pip" install --quiet matplotlib \
            || echo "matplotlib could not be installed: the report will have no chart" >&2
    fi
    [ -x "$venv/bin/python" ] && python="$venv/bin/python"
fi
cd "$repo/bench"
exec "$python" -m sidebyside --pgvigil "$bin" --out "$out" --command-line "$cmd" "${pass[@]}"
