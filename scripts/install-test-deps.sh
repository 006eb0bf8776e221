#!/usr/bin/env bash
# Installs what the test suite runs for real (DESIGN.md, "Tests"): the PostgreSQL server with
# pg_stat_statements, Prometheus (promtool), Alertmanager, PgBouncer, postgres_exporter, runuser
# and ps, openssl (certificates for the TLS tests), curl (the HTTPS endpoint tests), plus
# cargo-nextest.
#
# Idempotent, and fast when everything is present: it then only looks for programs and makes no
# apt call. Missing Debian packages are installed with apt-get (as root, or through sudo) with
# service start-up disabled: the tests start their own instances on free ports, so none may be
# left running. Prints one line per thing: present or installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
# Debian keeps daemons (pgbouncer, runuser) in sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

report() { printf '%-44s %s\n' "$1" "$2"; }

# --- What is missing? ------------------------------------------------------------------------

# Fills `missing` (Debian packages to install) and `pending` (labels of the things they provide)
# and reports what is present when called with "report".
detect() {
    missing=() pending=()
    # PostgreSQL: prefer the highest major version installed (the one the testkit picks).
    pg_major=""
    local dir v
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] || continue
        v="${dir#/usr/lib/postgresql/}"; v="${v%/bin}"
        if [ -z "$pg_major" ] || [ "$(printf '%s\n%s\n' "$pg_major" "$v" | sort -V | tail -n1)" = "$v" ]; then
            pg_major="$v"
        fi
    done
    if [ -n "$pg_major" ] && [ -f "/usr/lib/postgresql/$pg_major/lib/pg_stat_statements.so" ]; then
        [ "$1" != report ] || report "postgresql-$pg_major + pg_stat_statements" present
    elif [ -n "$pg_major" ]; then
        # Since PostgreSQL 10 Debian ships contrib inside postgresql-<major>; older or
        # third-party layouts have a separate contrib package.
        missing+=("postgresql-$pg_major")
        if apt-cache show "postgresql-contrib-$pg_major" >/dev/null 2>&1; then
            missing+=("postgresql-contrib-$pg_major")
        fi
        pending+=("postgresql-$pg_major + pg_stat_statements")
    else
        missing+=(postgresql postgresql-contrib)
        pending+=("postgresql + pg_stat_statements")
    fi

    # package:program pairs; the program proves the package is there.
    local pair pkg prog label
    for pair in \
        prometheus:promtool \
        prometheus-alertmanager:prometheus-alertmanager \
        pgbouncer:pgbouncer \
        prometheus-postgres-exporter:prometheus-postgres-exporter \
        util-linux:runuser \
        procps:ps \
        openssl:openssl \
        curl:curl; do
        pkg="${pair%%:*}" prog="${pair#*:}"
        label="$pkg"; [ "$prog" = "$pkg" ] || label="$pkg ($prog)"
        if command -v "$prog" >/dev/null 2>&1; then
            [ "$1" != report ] || report "$label" present
        else
            missing+=("$pkg")
            pending+=("$label")
        fi
    done
}

detect report
pg_major_before="$pg_major"

# --- Install ---------------------------------------------------------------------------------

if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing ${missing[*]}, and this is not a Debian-like system: install them by hand" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
        sudo=(sudo --preserve-env=DEBIAN_FRONTEND)
    fi

    # Keep package scripts from starting services: invoke-rc.d and deb-systemd-invoke ask
    # policy-rc.d, and 101 means "action forbidden". Any existing policy is set aside and put back.
    policy=/usr/sbin/policy-rc.d
    saved_policy=""
    restore_policy() {
        "${sudo[@]}" rm -f "$policy"
        if [ -n "$saved_policy" ]; then "${sudo[@]}" mv "$saved_policy" "$policy"; fi
    }
    if [ -e "$policy" ]; then
        saved_policy="$policy.pgvigil-saved"
        "${sudo[@]}" mv "$policy" "$saved_policy"
    fi
    trap restore_policy EXIT
    printf '#!/bin/sh\n# Written by pgvigil scripts/install-test-deps.sh for the duration of an install.\nexit 101\n' \
        | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"

    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

    restore_policy
    trap - EXIT

    # Belt and braces for hosts whose init system ignored the policy: stop and disable the
    # services of the packages just installed (never a server that was already there).
    if [ -d /run/systemd/system ]; then
        for pkg in "${missing[@]}"; do
            case "$pkg" in
                postgresql*) [ -z "$pg_major_before" ] && unit=postgresql || continue ;;
                prometheus | prometheus-alertmanager | pgbouncer | prometheus-postgres-exporter) unit="$pkg" ;;
                *) continue ;;
            esac
            if systemctl is-active --quiet "$unit" 2>/dev/null; then
                "${sudo[@]}" systemctl stop "$unit" || true
            fi
            "${sudo[@]}" systemctl disable --quiet "$unit" 2>/dev/null || true
        done
    fi

    installed=("${pending[@]}")
    detect quiet
    if [ "${#pending[@]}" -gt 0 ]; then
        echo "still missing after apt-get install: ${pending[*]}" >&2
        exit 1
    fi
    for thing in "${installed[@]}"; do report "$thing" installed; done
fi

# --- cargo-nextest ---------------------------------------------------------------------------

if cargo nextest --version >/dev/null 2>&1; then
    report cargo-nextest present
else
    cargo install --locked --quiet cargo-nextest
    report cargo-nextest installed
fi
