#!/usr/bin/env bash
# The test command: installs the datasets the tests read and the servers they start
# (idempotent), then runs every test.
# Tests run with the `ballista` feature (the Ballista codecs and the multi-process cluster tests in
# tests/it/cluster.rs): one build covers everything, and the feature only adds crates. Set
# CLIPTTA_TEST_FEATURES= (empty) to test the default build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/install-datasets.sh ]; then
  scripts/install-datasets.sh
fi
scripts/install-test-tools.sh
# The tools are installed, so a test that cannot find one fails instead of skipping.
export CLIPTTA_REQUIRE_TEST_TOOLS=1
# The library without its default `cli` feature depends on none of the command line's crates
# (cargo tree resolves features as `cargo build -p cliptta --no-default-features` would).
cli_only=$(cargo tree -p cliptta --no-default-features -e normal --prefix none --format '{p}' \
    | grep -E '^(clap|indicatif|tracing-subscriber|plotters|minijinja) ' | sort -u || true)
if [ -n "$cli_only" ]; then
    echo "cliptta --no-default-features depends on CLI-only crates:" >&2
    echo "$cli_only" >&2
    exit 1
fi
# The Python package is tested from Python below (its crate has no Rust test target).
cargo test --workspace --exclude cliptta-python --features "${CLIPTTA_TEST_FEATURES-ballista}" "$@"

# The Python package (python/), installed from source into a virtual environment of its own as
# `pip install ./python` installs it for a user, then its tests and docstring examples, which
# compare it with the `cliptta` binary the cargo tests just built.
venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "./python[test]"
CLIPTTA_BIN="$PWD/target/debug/cliptta" "$venv/bin/python" -m pytest -q python/tests --doctest-modules --pyargs cliptta
