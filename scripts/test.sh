#!/usr/bin/env bash
# The test command: installs the datasets the tests read and the servers they start
# (idempotent), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/install-datasets.sh ]; then
  scripts/install-datasets.sh
fi
scripts/install-test-tools.sh
# The tools are installed, so a test that cannot find one fails instead of skipping.
export CLIPTTA_REQUIRE_TEST_TOOLS=1
cargo test --workspace "$@"
