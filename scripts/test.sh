#!/usr/bin/env bash
# The project's one test command: installs the real programs the tests drive, runs every test
# with nextest (one process per test; extra arguments go to `cargo nextest run`, e.g. a filter
# or `--profile ci`), then the doctests, which nextest does not run, then the Python client's
# pytest suite (scripts/python-tests.sh; it installs its PyPI packages into a cached venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-test-deps.sh
cargo nextest run --workspace --all-features --no-fail-fast "$@"
cargo test --workspace --all-features --doc
scripts/python-tests.sh
