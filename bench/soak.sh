#!/usr/bin/env bash
# The soak: pgvigil for an hour under pgbench, an import every minute (every third one short),
# a fault every five minutes; records RSS, descriptors, sessions and alerts; writes its figures
# into BENCHMARKS.md (a section it owns). See bench/soak.py for the steps and pass criteria.
#
#   bench/soak.sh                     full run (1 h): builds pgvigil --release, writes BENCHMARKS.md
#   bench/soak.sh --minutes 5 --no-write    a short run, results only in --out
#
# Options: --out DIR (default: a new temp dir; results.json, report.md, pgvigil.log), --pgvigil BIN
# (skip the build; the binary is copied into --out so a rebuild cannot change it mid-run),
# --minutes N (60), --rate TPS (pgbench -R, 5; one client: the machine may be shared),
# --import-every S (60), --fault-every S (300), --no-write. Needs the PostgreSQL server binaries,
# pgbench, psql and python3 (scripts/install-test-deps.sh); run as root it runs PostgreSQL as the
# OS user postgres. Exit status 0 when every pass criterion held.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

write=1 out="" bin="" minutes=60 pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift ;;
        --pgvigil) bin="$2"; shift ;;
        --minutes) minutes="$2"; shift ;;
        --rate) pass+=(--rate "$2"); shift ;;
        --import-every) pass+=(--import-every "$2"); shift ;;
        --fault-every) pass+=(--fault-every "$2"); shift ;;
        --no-write) write=0 ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1; see bench/soak.sh --help" >&2; exit 2 ;;
    esac
    shift
done
for prog in python3 runuser; do
    command -v "$prog" >/dev/null || { echo "$prog not found: run scripts/install-test-deps.sh" >&2; exit 1; }
done
[ -n "$out" ] || out="$(mktemp -d -t pgvigil-soak.XXXXXX)"
mkdir -p "$out"
if [ -z "$bin" ]; then
    (cd "$repo" && cargo build --release --quiet --bin pgvigil)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/pgvigil"
fi
cp "$bin" "$out/pgvigil"
seconds=$((minutes * 60))
warmup=$((seconds / 12)); [ "$warmup" -lt 60 ] && warmup=60
[ "$write" = 1 ] && pass+=(--benchmarks "$repo/BENCHMARKS.md")
exec python3 "$repo/bench/soak.py" --pgvigil "$out/pgvigil" --out "$out" --duration "$seconds" \
    --warmup "$warmup" --command-line "bench/soak.sh --minutes $minutes" "${pass[@]}"
