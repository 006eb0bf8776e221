#!/usr/bin/env bash
# Checks the Python client with ruff (lint and format) and runs its pytest suite
# (clients/python/tests) against a throwaway cluster and a real pgvigil, as scripts/test.sh does
# after the Rust tests. Extra arguments go to pytest.
#
# The packages the tests need (clients/python/requirements-test.txt, pinned) are installed from
# PyPI into a virtualenv kept outside the repository, keyed by that file's hash:
# ${PGVIGIL_PY_VENV:-${XDG_CACHE_HOME:-~/.cache}/pgvigil/pyvenv-<hash>}. When it exists this is
# a no-op check (no pip call). The binaries the tests drive (pgvigil, pgvigil-testkit, the
# record_import example) are built here with the same features as the Rust suite, so after
# `cargo nextest run --workspace --all-features` nothing is rebuilt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PGVIGIL_PYTHON:-python3}
command -v "$python" >/dev/null || { echo "python-tests: $python not found (set PGVIGIL_PYTHON)" >&2; exit 1; }
requirements=clients/python/requirements-test.txt
hash=$({ "$python" --version; cat "$requirements"; } | sha256sum | cut -c1-16)
venv=${PGVIGIL_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pgvigil/pyvenv-$hash}

if [ -f "$venv/.pgvigil-installed" ] && [ "$(cat "$venv/.pgvigil-installed")" = "$hash" ]; then
    printf '%-44s %s\n' "python test venv ($venv)" present
else
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$hash" > "$venv/.pgvigil-installed"
    printf '%-44s %s\n' "python test venv ($venv)" installed
fi

cargo build --quiet --all-features \
    -p pgvigil --bin pgvigil -p pgvigil-testkit --bin pgvigil-testkit \
    -p pgvigil-timing --example record_import
target=${CARGO_TARGET_DIR:-target}
export PGVIGIL_BIN="$target/debug/pgvigil"
export PGVIGIL_TESTKIT_BIN="$target/debug/pgvigil-testkit"
export PGVIGIL_RECORD_IMPORT_BIN="$target/debug/examples/record_import"
case "$target" in /*) ;; *) for v in PGVIGIL_BIN PGVIGIL_TESTKIT_BIN PGVIGIL_RECORD_IMPORT_BIN; do export "$v=$PWD/${!v}"; done ;; esac

cd clients/python
# Lint and format check (clients/python/pyproject.toml [tool.ruff]), then the tests.
"$venv/bin/ruff" check --quiet --no-cache src tests
"$venv/bin/ruff" format --check --quiet --no-cache src tests
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
